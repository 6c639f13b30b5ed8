"""Benchmark of the SSL stream on CPU (or CUDA): extraction real-time factor per number of layers,
bytes per audio second per option, and training seconds per epoch from the cache vs online.

    python bench/bench_ssl.py rtf --root ../shared/data/offla19 [--n 40] [--layers 2,12] [--device cpu]
    python bench/bench_ssl.py bytes --root ../shared/data/offla19 [--crop 1,2,4]
    python bench/bench_ssl.py epoch --store STORE.zarr [--variant ssl+mean] [--n 128] [--epochs 1]
    python bench/bench_ssl.py long --file AUDIO [--seconds 20,60,120] [--layers 12] [--threads 2]

``rtf``: the first ``--n`` dev utterances of the corpus (decoded at 16 kHz beforehand: the model's
time alone), through UNTRAINED WavLM-Large (seeded; the same architecture and cost as the published
weights, whose file cannot be fetched here) truncated to the last layer of each option, in the
extractor's own padded batches (``extract.ssl.SSLFrontEnd``, 8 s batches). Prints audio seconds per
wall second (the real-time factor's inverse) and process CPU share, with the load average.

``bytes``: uncompressed bytes per audio second of each option (50 frames/s x layers x 1024 x 2 B),
and with ``--ssl-crop C`` the share of the train split's audio kept (sum of min(duration, C) over the
sum of durations, from the protocol's files), next to the codec's codes.

``epoch``: one training epoch of ``--variant`` on the first ``--n`` train utterances of a store with
an SSL stream, through the training loop's own ``classify.train.TrainingRun``: from the cache, then online
(``ssl_kwargs.online``), the same crops. One torch thread each.

``long``: one long utterance (the first SECONDS of ``--file`` at 16 kHz) through UNTRAINED
WavLM-Large layers 1-``--layers``, in windows (the front end's default: 30 s kept, 2 s of context)
and as one whole pass, each in a fresh process: peak RSS (the process's ru_maxrss), wall time, and
how far the windowed frames are from the whole pass's (largest and RMS difference over the RMS of
the features).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def files(root: str, split: str) -> list[tuple[str, float]]:
    from extract.datasets import get_dataset

    table = get_dataset("asv19").load(Path(root), [split]).table
    import soundfile

    return [(p, soundfile.info(p).duration) for p in table["path"]]


def rtf(args) -> None:
    import torch

    from extract import ssl
    from extract.audio import load_audio
    from extract.unit import length_batches

    torch.set_num_threads(args.threads)
    chosen = files(args.root, "dev")[: args.n]
    wavs = [load_audio(p, target_rate=16000)[0] for p, _ in chosen]
    seconds = sum(w.numel() for w in wavs) / 16000
    print(f"{len(wavs)} dev utterances, {seconds:.1f} audio s; torch threads {args.threads}, device {args.device}")
    print("| layers run | parameters used | audio s / wall s | CPU share | load before / after |")
    print("|---|---|---|---|---|")
    for last in (int(v) for v in args.layers.split(",")):
        weights = ssl.resolve_weights("wavlm-large", "untrained", last)
        front = ssl.front_end(weights, tuple(range(1, last + 1)), args.device)
        batches = length_batches({k: w.numel() for k, w in enumerate(wavs)}, 8 * 16000)
        front([wavs[0][:16000]])  # warm-up
        before, cpu, started = load(), cpu_seconds(), time.perf_counter()
        for batch in batches:
            front([wavs[k] for k in batch])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
        print(f"| 1-{last} | {ssl.count_used(ssl.architecture('wavlm-large'), last):,} | {seconds / wall:.2f} | "
              f"{(cpu_seconds() - cpu) / wall:.2f} | {before} / {load()} |")


def bytes_per_second(args) -> None:
    from extract.ssl_stream import bytes_per_second as per_second

    train = files(args.root, "train")
    total = sum(d for _, d in train)
    print(f"train split: {len(train)} utterances, {total:.0f} audio s, mean {total / len(train):.2f} s")
    print("| option | kept share of train audio | bytes per audio second (train) | 24 h of train |")
    print("|---|---|---|---|")
    for layers in (12, 6, 4, 2):
        for crop in [None, *(float(c) for c in args.crop.split(","))]:
            share = 1.0 if crop is None else sum(min(d, crop) for _, d in train) / total
            rate = per_second(layers, 1024, share)
            name = f"--ssl-layers 1-{layers}" + (f" --ssl-crop {crop:g}" if crop else "")
            print(f"| `{name}` | {share:.3f} | {rate:,.0f} | {rate * 86400 / 1e9:.1f} GB |")


def epoch(args) -> None:
    import torch

    from classify.config import TrainConfig
    from classify.train import TrainingRun
    from store.reader import FeatureStore

    torch.set_num_threads(1)
    store = FeatureStore(args.store)
    results = {}
    for online in (False, True):
        config = TrainConfig(variant=args.variant, device="cpu", crop_seconds=args.crop, batch_size=32,
                             ssl_kwargs={"online": online, **({"proj_dim": args.proj_dim} if args.proj_dim else {})})
        run = TrainingRun(config, store, Path("/tmp/bench_ssl_unused"), log=lambda _: None)
        run.train_data = dataclasses.replace(run.train_data, **{
            f.name: getattr(run.train_data, f.name)[: args.n] for f in dataclasses.fields(run.train_data)
            if f.name not in ("name", "n_failed")})
        run.steps_per_epoch = -(-args.n // 32)
        before, cpu, started = load(), cpu_seconds(), time.perf_counter()
        for k in range(args.epochs):
            run.generator.manual_seed(0)
            run.run_epoch(k + 1)
        wall = (time.perf_counter() - started) / args.epochs
        results[online] = wall
        print(f"{'online' if online else 'cached'}: {wall:.1f} s per epoch of {args.n} utterances "
              f"({config.crop_seconds:g} s crops, {run.model.n_trainable():,} trainable), CPU share "
              f"{(cpu_seconds() - cpu) / wall / args.epochs:.2f}, load {before} / {load()}")
    print(f"online / cached: {results[True] / results[False]:.1f}x")


def long_one(args) -> None:
    """Child of ``long``: one mode and length; prints a JSON line, saves the features."""
    import json

    import numpy as np
    import torch

    from extract import ssl
    from extract.audio import load_audio

    torch.set_num_threads(args.threads)
    wav = load_audio(args.file, target_rate=16000)[0][: int(args.seconds * 16000)]
    weights = ssl.resolve_weights("wavlm-large", "untrained", args.layers)
    window = ssl.SSL_WINDOW_SECONDS if args.mode == "windows" else float("inf")
    front = ssl.front_end(weights, tuple(range(1, args.layers + 1)), "cpu", window_seconds=window)
    started = time.perf_counter()
    out = front([wav])[0]
    wall = time.perf_counter() - started
    np.save(args.save, out.numpy())
    print(json.dumps({"mode": args.mode, "seconds": wav.numel() / 16000, "windows": len(front.windows(wav.numel())),
                      "wall": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def long_files(args) -> None:
    import json
    import subprocess
    import tempfile

    import numpy as np

    print(f"file {args.file}; UNTRAINED WavLM-Large (seeded) layers 1-{args.layers}; torch threads {args.threads}; "
          f"load {load()}")
    print("| audio s | windows | peak RSS, windows (MiB) | peak RSS, whole pass (MiB) | wall s, windows / whole | "
          "windows vs whole: largest / RMS difference over features' RMS |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for seconds in (float(v) for v in args.seconds.split(",")):
            rows = {}
            for mode in ("windows", "whole"):
                save = f"{work}/{mode}.npy"
                done = subprocess.run([sys.executable, __file__, "long-one", "--file", args.file, "--seconds",
                                       str(seconds), "--layers", str(args.layers), "--threads", str(args.threads),
                                       "--mode", mode, "--save", save], capture_output=True, text=True)
                if done.returncode != 0:
                    rows[mode] = {"failed": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
                    continue
                rows[mode] = {**json.loads(done.stdout.strip().splitlines()[-1]), "features": np.load(save)}
            w, h = rows["windows"], rows["whole"]
            if "failed" in w or "failed" in h:
                print(f"| {seconds:g} | failed: {w.get('failed', '')} {h.get('failed', '')} |")
                continue
            diff, scale = w["features"] - h["features"], np.sqrt(np.mean(h["features"] ** 2))
            print(f"| {w['seconds']:.0f} | {w['windows']} | {w['peak_rss_mib']:,.0f} | {h['peak_rss_mib']:,.0f} | "
                  f"{w['wall']:.1f} / {h['wall']:.1f} | {np.abs(diff).max() / scale:.3g} / "
                  f"{np.sqrt(np.mean(diff ** 2)) / scale:.3g} |")
    print(f"load at the end {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("rtf")
    a.add_argument("--root", required=True)
    a.add_argument("--n", type=int, default=40)
    a.add_argument("--layers", default="2,12")
    a.add_argument("--device", default="cpu")
    a.add_argument("--threads", type=int, default=os.cpu_count())
    b = sub.add_parser("bytes")
    b.add_argument("--root", required=True)
    b.add_argument("--crop", default="1,2,4")
    c = sub.add_parser("epoch")
    c.add_argument("--store", required=True)
    c.add_argument("--variant", default="ssl+mean")
    c.add_argument("--n", type=int, default=128)
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--crop", type=float, default=1.5)
    c.add_argument("--proj-dim", type=int, default=None)
    d = sub.add_parser("long")
    d.add_argument("--file", required=True)
    d.add_argument("--seconds", default="20,60,120")
    d.add_argument("--layers", type=int, default=12)
    d.add_argument("--threads", type=int, default=os.cpu_count())
    e = sub.add_parser("long-one")
    for name in ("--file", "--mode", "--save"):
        e.add_argument(name, required=True)
    e.add_argument("--seconds", type=float, required=True)
    e.add_argument("--layers", type=int, required=True)
    e.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    {"rtf": rtf, "bytes": bytes_per_second, "epoch": epoch, "long": long_files, "long-one": long_one}[args.what](args)


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "extract/ssl.py",
    "extract/ssl_stream.py",
    "extract/frontend.py",
    "extract/audio.py",
    "extract/run.py",
    "classify/online.py",
    "classify/frames.py",
    "classify/data.py",
    "classify/sources.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "ssl", MODULES))

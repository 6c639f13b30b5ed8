"""The GPU run, prepared (issue 21, item 6): on a lent GPU machine with no registry access, measure
the pipeline end to end on a corpus generated there, within about 8 minutes, and write
``bench/results/gpu.json`` (or ``$BENCH_RESULTS_DIR/gpu.json``) for the figures renderer.

    bash bench/gpu_check.sh                      # on the GPU machine (installs .whl/, then this)
    python bench/gpu_check.py --device cpu --tiny --result none   # a dry run anywhere (CPU, tiny sizes)

Steps, each a `pipeline` command in a child process, timed by wall clock (one GPU: a wall minute is a
GPU minute), with UNTRAINED codec and WavLM-Large weights (nothing can be downloaded there; the cost is
the real models'):

1. ``corpus``: the synthetic demo corpus (`extract.datasets.demo`), ``--files`` per split.
2. ``codec``: `pipeline extract --device D --workers 0` (codes, latent, energy): audio hours per GPU
   minute, the whole command (k-means codebooks and LSUV included) and its extraction alone.
3. ``ssl``: `pipeline extract --ssl wavlm-large --ssl-weights untrained` on the finished store (layers
   1-12 added): audio hours per GPU minute.
4. ``agreement``: the first ``--agree`` files extracted again on the CPU with the GPU store's codec
   weights (``--weights STORE/codec_weights.th``): the share of codes equal to the GPU's, bit for bit.
5. ``epoch``: `pipeline train --variant qaf-static --epochs 1` from the cache: seconds per epoch.
6. ``trial``: one trial of configs/sweeps/paper.toml (``ssl+qaf-static``, seed 0, ``--trial-epochs``
   epochs) through `pipeline sweep --workers 0`: seconds per epoch of the paper's full system.
7. ``hour``: `pipeline score` of one generated file of ``--hour-seconds`` (an hour) with the trial's
   model: audio seconds per wall second.

A step that fails is recorded with its error and the rest go on; the result says which ran. Nothing
here was run on a GPU yet: see BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import results as bench_results  # noqa: E402  (bench/results.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNTRAINED = ["--weights", "untrained"]
PAPER_SSL = 'ssl_kwargs={layers="1-12", proj_dim=512, norm=false}'


def pipeline(args: list[str], log: Path, timeout: float) -> tuple[float, str]:
    """Run ``python -m pipeline ARGS``; (wall seconds, "" or the error's last lines)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        try:
            done = subprocess.run([sys.executable, "-m", "pipeline", *args], stdout=out, stderr=subprocess.STDOUT,
                                  env=env, cwd=ROOT, timeout=timeout, check=False)
            error = "" if done.returncode in (0,) else f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - started
    if error:
        error += ": " + " | ".join(Path(log).read_text(errors="replace").strip().splitlines()[-4:])
    print(f"  pipeline {' '.join(args[:1])}: {wall:.1f} s{' FAILED ' + error if error else ''}", flush=True)
    return wall, error


def store_audio_seconds(store: Path) -> float:
    from store.reader import FeatureStore

    table = FeatureStore(str(store)).utterances
    return float(table.loc[table["status"] == "ok", "duration"].sum())


def hour_file(path: Path, seconds: float) -> None:
    """One long file: the demo corpus's files concatenated over and over (16 kHz FLAC)."""
    import numpy as np
    import soundfile as sf

    parts, total = [], 0
    sources = sorted(path.parent.rglob("*.flac"))[:50]
    while total < seconds * 16000:
        for src in sources:
            data, rate = sf.read(src, dtype="float32")
            parts.append(data if rate == 16000 else np.interp(np.arange(0, len(data), rate / 16000), np.arange(len(data)), data))
            total += len(parts[-1])
    sf.write(path, np.concatenate(parts)[: int(seconds * 16000)], 16000)


def agreement(gpu_store: Path, cpu_store: Path) -> dict:
    """Share of the CPU store's codes equal to the GPU store's, per utterance id."""
    from store.reader import FeatureStore

    gpu, cpu = FeatureStore(str(gpu_store)), FeatureStore(str(cpu_store))
    where = {u: r for r, u in enumerate(gpu.utterances["utt_id"])}
    equal = total = 0
    for row, utt in enumerate(cpu.utterances["utt_id"]):
        a, b = cpu.utterance_codes(row), gpu.utterance_codes(where[utt])
        n = min(len(a), len(b))
        equal += int((a[:n] == b[:n]).sum())
        total += int(max(len(a), len(b)) * a.shape[1])
    return {"codes_compared": total, "equal_share": round(equal / max(total, 1), 6)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", default="/tmp/gpu_check")
    parser.add_argument("--files", type=int, default=400, help="demo files per split (about 2.5 s each)")
    parser.add_argument("--agree", type=int, default=40, help="files extracted again on the CPU")
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--hour-seconds", type=float, default=3600.0)
    parser.add_argument("--tiny", action="store_true", help="dry run: 6 files a split, wavlm-tiny, 20 s 'hour', 1 epoch")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all the steps, each getting what is "
                        "left (default 480; --tiny 3600)")
    parser.add_argument("--reuse", action="store_true", help="keep --work's corpus and stores (a dry run's second "
                        "try: the extraction timings are then those of a finished store)")
    args = parser.parse_args()
    if args.tiny:
        args.files, args.agree, args.trial_epochs, args.hour_seconds = 6, 4, 1, 20.0
    args.budget = args.budget or (3600.0 if args.tiny else 480.0)
    ssl_model = "wavlm-tiny" if args.tiny else "wavlm-large"
    work = Path(args.work)
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    for old in ("epoch", "sweep", "hour", "cpu.zarr"):
        shutil.rmtree(work / old, ignore_errors=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget
    left = lambda: max(10.0, deadline - time.perf_counter())  # noqa: E731
    device = ["--device", args.device]
    steps: dict[str, dict] = {}

    import torch

    steps["device"] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                       "name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    print(f"device: {steps['device']}", flush=True)

    from extract.datasets.demo import generate_demo_corpus

    started = time.perf_counter()
    corpus = generate_demo_corpus(work / "corpus", {s: args.files for s in ("train", "dev", "eval")}, seed=7)
    steps["corpus"] = {"files_per_split": args.files, "seconds": round(time.perf_counter() - started, 1)}
    store = work / "gpu.zarr"
    base = ["extract", "--dataset", "asv19", "--root", str(corpus), "--workers", "0", *device]

    wall, error = pipeline([*base, "--out", str(store), *UNTRAINED], work / "logs" / "codec.log", left())
    audio = store_audio_seconds(store) if not error else 0.0
    steps["codec"] = {"wall_s": round(wall, 1), "audio_s": round(audio, 1), "error": error,
                      "audio_h_per_gpu_min": round(audio / 3600 / (wall / 60), 3) if audio else None}
    steps["corpus"]["audio_s"] = round(audio, 1)

    if not error:
        ssl = ["--ssl", ssl_model, "--ssl-weights", "untrained"]
        wall, error = pipeline([*base, "--out", str(store), *UNTRAINED, *ssl], work / "logs" / "ssl.log", left())
        import pandas as pd

        from store.reader import FeatureStore

        steps["ssl"] = {"wall_s": round(wall, 1), "error": error, "layers": "1-12" if not args.tiny else "1-4",
                        "audio_h_per_gpu_min": round(audio / 3600 / (wall / 60), 3) if not error else None,
                        "storage": None if error else  # the default --ssl-storage, as recorded by the store
                        FeatureStore(str(store)).stream("ssl").spec.source["storage"]["name"]}

        subset = work / "subset.csv"

        table = FeatureStore(str(store)).utterances
        pick = table[table["status"] == "ok"].head(args.agree)
        pd.DataFrame({"path": pick["path"], "split": pick["split"].astype(str), "label": pick["label"],
                      "utt_id": pick["utt_id"]}).to_csv(subset, index=False)
        cpu_store = work / "cpu.zarr"
        wall, error = pipeline(["extract", "--dataset", "manifest", "--root", str(subset), "--out", str(cpu_store),
                                "--workers", "0", "--device", "cpu", "--weights", str(store / "codec_weights.th"),
                                "--no-latent", "--no-energy"], work / "logs" / "agree.log", left())
        steps["agreement"] = {"files": len(pick), "error": error, **(agreement(store, cpu_store) if not error else {})}

        wall, error = pipeline(["train", "--features", str(store), "--out", str(work / "epoch"), "--variant", "qaf-static",
                                "--epochs", "1", *device], work / "logs" / "epoch.log", left())
        steps["epoch"] = {"wall_s": round(wall, 1), "error": error, "variant": "qaf-static", "train_files": args.files}

        trial = ["sweep", "--features", str(store), "--config", str(ROOT / "configs/sweeps/paper.toml"),
                 "--out", str(work / "sweep"), "--workers", "0", "--set", 'variant=["ssl+qaf-static"]', "--set", "seed=[0]",
                 "--set", f"epochs={args.trial_epochs}", "--set", f"device={args.device}"]
        if args.tiny:
            trial += ["--set", 'ssl_kwargs={layers="1-4", proj_dim=16, norm=false}']
        wall, error = pipeline(trial, work / "logs" / "trial.log", left())
        steps["trial"] = {"wall_s": round(wall, 1), "error": error, "epochs": args.trial_epochs,
                          "s_per_epoch": round(wall / args.trial_epochs, 1) if not error else None}

        models = sorted((work / "sweep").rglob("best.pt"))
        long = work / "hour" / "long.flac"
        long.parent.mkdir()
        shutil.copy(next(corpus.rglob("*.flac")), long.parent / "seed.flac")
        hour_file(long, args.hour_seconds)
        (long.parent / "seed.flac").unlink()
        if models:
            wall, error = pipeline(["score", str(long), "--model", str(models[0].parent), "--out", str(work / "hour.csv"),
                                    *device], work / "logs" / "hour.log", left())
        else:
            wall, error = 0.0, "no trained model (the trial failed)"
        steps["hour"] = {"audio_s": args.hour_seconds, "wall_s": round(wall, 1), "error": error,
                         "audio_s_per_wall_s": round(args.hour_seconds / wall, 1) if not error else None}

    print(json.dumps(steps, indent=1))
    bench_results.record(steps=steps, tiny=args.tiny, device=args.device,
                         untested_on_gpu=not steps["device"]["cuda"])
    for log in sorted((work / "logs").glob("*.log")):
        out = os.environ.get("OUT")
        if out:
            shutil.copy(log, Path(out) / f"log_{log.name}")
    return 0


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "gpu", ["extract/", "classify/", "pipeline/", "store/"]))

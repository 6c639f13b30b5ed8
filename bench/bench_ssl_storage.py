"""Benchmark of the SSL stream's storage options (`store.sslstorage`, `pipeline extract --ssl-storage`):
bytes per audio second and each layer's cosine similarity to the float16 frames.

    python bench/bench_ssl_storage.py --root ../shared/data/offla19 [--fit 48] [--test 48] \
        [--options float16,int8,pca:512,pca:256,pca:128,pca:256:int8,pca:128:int8] [--threads 2]

``--fit`` train utterances (evenly spaced in the protocol) and ``--test`` dev and eval utterances (half
each, evenly spaced) run through UNTRAINED WavLM-Large (seeded; the published weights cannot be
fetched here) layers 1-12, in the extractor's own front end (`extract.ssl.SSLFrontEnd`, 8 s padded
batches), as float32 frames [frames, 12, 1024]. Each option then codes the test frames exactly as the
extraction does (`SSLStorage.encode` on the float32 frames; a ``pca:K`` basis fitted on the train
frames with `store.sslstorage.Moments`, as `extract.ssl_stream.SSLBackend.prepare` does on up to 64
train utterances) and decodes them as the training reader does (`SSLStorage.decode`, cast to float16).
Figures per option: bytes per audio second uncompressed (stored frames only) and on disk (the test
frames written as the store writes a stream: `store.writer.COMPRESSORS`, the spec's chunk size, into a
Zarr memory store), the reduction against float16, and per layer the mean and the 1st percentile of
the frame-wise cosine similarity of the decoded frames to the float16 frames. The basis itself
(L x 1024 x (K + 1) float32, 12.6 MB at K = 256) is a fixed cost per store, listed apart.

The EER comparison of issue 21 (paper.toml, paired seeds, with intervals) was not run (it needs hours
of CPU per storage); on a machine that has them, per storage S in float16, int8, pca:256 (stream NAME
ssl_f16, ssl_int8, ssl_pca256):

    pipeline extract --dataset asv19 --root ../shared/data/offla19 --out o19.zarr --weights untrained
    pipeline extract --dataset asv19 --root ../shared/data/offla19 --out o19.zarr --weights untrained \
        --ssl wavlm-large --ssl-weights untrained --ssl-storage S --set ssl_stream=NAME
    pipeline sweep --features o19.zarr --config configs/sweeps/paper.toml --out runs/NAME --workers 1 \
        --set 'ssl_kwargs={stream="NAME", layers="1-12", proj_dim=512, norm=false}' --set 'seed=[0,1,2]'

then compare each variant's dev and eval EER per seed against float16's (same seeds: paired).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import results as bench_results  # noqa: E402  (bench/results.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTIONS = "float16,int8,pca:512,pca:256,pca:128,pca:256:int8,pca:128:int8"


def sample(root: str, split: str, n: int) -> list[str]:
    from extract.datasets import get_dataset

    paths = get_dataset("asv19").load(Path(root), [split]).table["path"].tolist()
    picks = np.unique(np.linspace(0, len(paths) - 1, min(n, len(paths))).astype(int))
    return [paths[i] for i in picks]


def frames_of(model, paths: list[str], batch_seconds: float = 8.0) -> tuple[list[np.ndarray], float]:
    from extract.audio import load_audio

    waves = [load_audio(p, target_rate=16000)[0] for p in paths]
    out, batch, seconds = [], [], 0.0
    for wav in waves:
        batch.append(wav)
        if sum(w.numel() for w in batch) / 16000 >= batch_seconds:
            out += [f.numpy() for f in model(batch)]
            batch = []
    if batch:
        out += [f.numpy() for f in model(batch)]
    seconds = sum(w.numel() for w in waves) / 16000
    return out, seconds


def disk_bytes(stored: np.ndarray, coding) -> int:
    import zarr

    from store import format as sf
    from store.writer import COMPRESSORS

    spec = sf.StreamSpec("x", "x", "o", 50, coding.dtype, stored.shape[1:])
    chunk = min(spec.chunk_frames(), len(stored))
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(store, shape=stored.shape, dtype=stored.dtype, chunks=(chunk, *stored.shape[1:]),
                              compressors=COMPRESSORS)
    array[...] = stored
    return sum(len(v.to_bytes()) for k, v in store._store_dict.items() if not k.endswith("zarr.json"))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frame-wise cosine of [F, L, H] arrays -> [F, L]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--fit", type=int, default=48)
    parser.add_argument("--test", type=int, default=48)
    parser.add_argument("--options", default=OPTIONS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from extract.ssl import front_end, resolve_weights
    from store.sslstorage import Moments, SSLStorage

    torch.set_num_threads(args.threads)
    layers = tuple(range(1, 13))
    weights = resolve_weights("wavlm-large", "untrained", 12, 0)
    model = front_end(weights, layers)
    started = time.perf_counter()
    with torch.inference_mode():
        fit, fit_seconds = frames_of(model, sample(args.root, "train", args.fit))
        test, test_seconds = frames_of(model, sample(args.root, "dev", args.test // 2)
                                       + sample(args.root, "eval", args.test - args.test // 2))
    model_seconds = time.perf_counter() - started
    moments = Moments()
    for f in fit:
        moments.add(f)
    x = np.concatenate(test)  # float32 [F, 12, 1024]
    plain = x.astype(np.float16)
    fps = len(x) / test_seconds
    print(f"# SSL storage options: {weights.label}, layers 1-12")
    print(f"fit: {len(fit)} train utterances, {fit_seconds:.0f} s, {moments.count} frames; test: {len(test)} dev+eval "
          f"utterances, {test_seconds:.0f} s, {len(x)} frames; model {model_seconds:.0f} s\n")
    rows, per_layer, bases = [], {}, {}
    float16_disk = None
    for name in args.options.split(","):
        coding = SSLStorage.parse(name)
        pca = (None, None)
        if coding.components:
            if coding.components not in bases:
                bases[coding.components] = moments.pca(coding.components)
            pca = bases[coding.components][:2]
        stored = coding.encode(x, *pca)
        decoded = coding.decode(stored, *pca).astype(np.float16)
        cos = cosine(decoded, plain)
        mean, low = cos.mean(axis=0), np.percentile(cos, 1, axis=0)
        disk = disk_bytes(stored, coding) / test_seconds
        float16_disk = float16_disk or (disk if coding.plain else None)
        raw = coding.bytes_per_frame(12, 1024) * fps
        per_layer[coding.name] = {"mean": [round(float(v), 6) for v in mean], "p1": [round(float(v), 6) for v in low]}
        kept = "" if not coding.components else f"{bases[coding.components][2].min():.4f}"
        rows.append([coding.name, f"{raw:,.0f}", f"{disk:,.0f}", f"{(float16_disk or disk) / disk:.2f}x",
                     f"{mean.min():.5f}", f"{low.min():.5f}", "yes" if mean.min() >= 0.999 else "no", kept])
    print("## Bytes per audio second and cosine to float16\n")
    print("| storage | bytes/audio s (uncompressed) | bytes/audio s (on disk) | smaller than float16 (disk) "
          "| worst layer's mean cosine | worst layer's 1st-percentile cosine | every layer >= 0.999 | variance kept (worst layer) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for k in sorted(bases):
        print(f"\npca:{k} basis: {12 * 1024 * (k + 1) * 4 / 1e6:.1f} MB per store (float32 mean and basis)")
    bench_results.record(cosine_per_layer=per_layer, frames_per_second=round(fps, 3),
                         fit={"utterances": len(fit), "seconds": round(fit_seconds, 1), "frames": moments.count},
                         test={"utterances": len(test), "seconds": round(test_seconds, 1), "frames": len(x)},
                         ssl_weights_label=weights.label, ssl_weights_sha256=weights.sha256)
    return 0


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "ssl_storage", ["store/sslstorage.py", "extract/ssl_stream.py", "classify/frames.py"]))

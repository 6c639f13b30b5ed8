"""A small finished feature store in the exact layout `extract.store.finish_store` leaves, made directly.

Random codebooks, codes and latent; a real EnCodec 24 kHz state dict as the weights file (its
codebooks are the store's, so the store is self-consistent); attributes as `extract.run.extract`
writes them. Chunks are tiny (``codes_chunk`` frames, ``shard_chunks`` chunks per shard for the
codes; the latent unsharded) so that a few hundred frames span several chunks and shards.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
import zarr
from zarr.codecs import ZstdCodec

from extract import storeformat as sf
from extract.codec import BANDWIDTHS, CODEBOOK_SIZE, CODEC_NAME, DIM, FRAME_RATE, WeightsInfo, new_model
from extract.run import ExtractConfig
from extract.storeformat import StoreFiles

SPLITS = ("train", "dev", "eval")
FAILURE_REASON = "synthetic: audio cannot be decoded"


@lru_cache(maxsize=4)
def _weights(n_q: int, seed: int) -> tuple[bytes, np.ndarray, int]:
    """(state dict bytes, codebooks [n_q, 1024, 128], parameter count) of a real EnCodec model whose
    first n_q codebooks are random."""
    torch.manual_seed(seed)
    model = new_model()
    generator = torch.Generator().manual_seed(seed)
    for layer in model.quantizer.vq.layers:
        layer._codebook.embed.copy_(torch.randn(CODEBOOK_SIZE, DIM, generator=generator))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    codebooks = np.stack([layer._codebook.embed.numpy() for layer in model.quantizer.vq.layers[:n_q]])
    return buf.getvalue(), codebooks, sum(p.numel() for p in model.parameters())


def _table(rng: np.random.Generator, n_utts: int, failed: int) -> pd.DataFrame:
    """The utterance table as finish_store writes it (failed rows: no frames, NaN probe columns)."""
    split = np.array(SPLITS)[np.minimum(np.arange(n_utts) * len(SPLITS) // n_utts, len(SPLITS) - 1)]
    label = np.where(rng.random(n_utts) < 0.3, "bonafide", "spoof")
    system = np.where(label == "bonafide", "-", [f"A0{k}" for k in rng.integers(1, 4, n_utts)])
    n_frames = rng.integers(20, 120, n_utts)
    failed_rows = np.sort(rng.choice(n_utts, size=failed, replace=False)) if failed else np.array([], dtype=int)
    ok = ~np.isin(np.arange(n_utts), failed_rows)
    n_frames = np.where(ok, n_frames, 0)
    ids = [f"SYN_{s[0].upper()}_{i:05d}" for i, s in enumerate(split)]
    table = pd.DataFrame(
        {
            "utt_id": ids,
            "speaker": [f"SPK_{i % 5}" for i in range(n_utts)],
            "system": system,
            "codec": "-",
            "label": label,
            "split": split,
            "path": [f"/synth/audio/{i}.flac" for i in ids],
            "duration": np.where(ok, (n_frames - rng.random(n_utts)) / FRAME_RATE, np.nan),
            "status": np.where(ok, "ok", "failed"),
            "n_frames": n_frames.astype(np.int64),
            "n_windows": np.where(ok, 1.0, np.nan),
            "sample_rate": np.where(ok, 16000.0, np.nan),
            "channels": np.where(ok, 1.0, np.nan),
        }
    )
    table["frame_offset"] = np.concatenate([[0], np.cumsum(n_frames)[:-1]]).astype(np.int64)
    return table


def _array(root: zarr.Group, name: str, data: np.ndarray, chunk: int, shards: int | None, checksum: bool) -> None:
    """Write ``data`` chunked (and sharded) along its first axis, as `_write_concatenated` does;
    ``checksum``: zstd with a content checksum instead of Zarr's default zstd without."""
    rows = data.shape[1:]
    shard = (chunk * shards, *rows) if shards else None
    compressors = ZstdCodec(level=0, checksum=True) if checksum else "auto"
    array = root.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(chunk, *rows), shards=shard, compressors=compressors)
    array[...] = data


def make_finished_store(
    path: str | os.PathLike,
    n_utts: int = 24,
    n_q: int = 8,
    latent: bool = True,
    failed: int = 1,
    seed: int = 0,
    *,
    problems: int = 1,
    codes_chunk: int = 64,
    shard_chunks: int = 4,
    latent_chunk: int = 64,
    checksum: bool = False,
) -> str:
    """Write a finished store at ``path`` and return ``path``.

    ``n_utts`` utterances over train/dev/eval (in that order), ``failed`` of them failed (no
    frames, a row in failures.parquet), plus ``problems`` protocol problems (in failures.parquet only).
    ``checksum``: codes and latent chunks carry a zstd checksum (the real writer's default does not).
    """
    rng = np.random.default_rng(seed)
    weights, codebooks, parameters = _weights(n_q, seed)
    table = _table(rng, n_utts, failed)
    ok = table["status"] == "ok"
    total = int(table["n_frames"].sum())
    offsets = np.concatenate([[0], np.cumsum(table["n_frames"].to_numpy())]).astype(np.int64)

    path = str(path)
    files = StoreFiles(path)
    root = zarr.open_group(path, mode="w")
    files.write_bytes(sf.WEIGHTS, weights)
    root.create_array(sf.CODEBOOKS, data=codebooks, chunks=codebooks.shape)
    _array(root, sf.CODES, rng.integers(0, CODEBOOK_SIZE, (total, n_q)).astype(np.uint16), codes_chunk, shard_chunks, checksum)
    if latent:
        _array(root, sf.LATENT, rng.standard_normal((total, DIM)).astype(np.float16), latent_chunk, None, checksum)
    root.create_array(sf.OFFSETS, data=offsets, chunks=offsets.shape)

    protocol = pd.DataFrame(
        [(None, "/synth/protocol.txt", "dataset", f"/synth/protocol.txt:{k + 1}: bad line") for k in range(problems)],
        columns=list(sf.FAILURE_COLUMNS),
    )
    failures = table.loc[~ok, ["utt_id", "path"]].assign(stage="audio", reason=FAILURE_REASON)
    failures = pd.concat([protocol, failures], ignore_index=True)
    files.write_table(sf.FAILURES, failures)
    files.write_table(sf.UTTERANCES, table)

    sha = hashlib.sha256(weights).hexdigest()
    info = WeightsInfo("untrained", sha, False, f"seed={seed}, synthetic test store (random codebooks)")
    bandwidth = {q: b for b, q in BANDWIDTHS.items()}[n_q]
    config = ExtractConfig(dataset="synth", root="/synth", out=path, bandwidth=bandwidth, weights="untrained", latent=latent, seed=seed)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    root.attrs.update(
        {
            "codec": {
                "name": CODEC_NAME,
                "sample_rate": 24000,
                "frame_rate": FRAME_RATE,
                "n_q": n_q,
                "bandwidth": bandwidth,
                "codebook_size": CODEBOOK_SIZE,
                "dim": DIM,
                "parameters": parameters,
            },
            "weights": {**info.to_dict(), "file": sf.WEIGHTS},
            "dataset": {"name": "synth", "root": "/synth", "splits": sorted(SPLITS), "description": "synthetic test store (random codes)"},
            "config": asdict(config),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "zarr": zarr.__version__},
            "format": sf.FORMAT,
            "format_version": sf.FORMAT_VERSION,
            "state": sf.STATE_COMPLETE,
            "created": stamp,
            "completed": stamp,
            "summary": {
                "utterances": len(table),
                "ok": int(ok.sum()),
                "failed": len(failures),
                "frames": total,
                "audio_seconds": float(table.loc[ok, "duration"].sum()),
                "weights": info.label,
            },
        }
    )
    return path

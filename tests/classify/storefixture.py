"""Synthetic finished feature stores for tests: the exact layout of `extract.storeformat`, no codec.

Codebooks are random. Codes at the first ``informative`` levels are drawn from the lower half of
each codebook for bona fide utterances and from the upper half for spoofs, with ``noise`` of the
frames drawn uniformly instead; every other level is uniform for both classes. A model therefore
can learn the task, and only through the informative levels. The latent (optional) is the sum of
the codes' embeddings plus Gaussian noise, so it carries the same signal.

Also here: :func:`tiny_config`, a training config small enough for tests, and the autouse
fixture :func:`one_torch_thread` that test modules import to keep tiny models fast.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from classify.config import TrainConfig
from extract import storeformat as sf
from extract.storeformat import StoreFiles

SPLITS = ("train", "dev", "eval")
_PREFIX = {"train": "T", "dev": "D", "eval": "E"}
ATTACKS = ("A01", "A02", "A03")
CODECS = ("-", "C01")


def make_store(
    path: str,
    n_per_split: int = 24,
    n_q: int = 8,
    latent: bool = True,
    seed: int = 0,
    *,
    codebook_size: int = 64,
    dim: int = 16,
    frames: tuple[int, int] = (30, 120),
    informative: int = 2,
    noise: float = 0.3,
    bonafide_share: float = 0.4,
    splits: tuple[str, ...] = SPLITS,
    spoof_only: tuple[str, ...] = (),
    failed_per_split: int = 0,
    dataset: str = "asv19",
    weights_seed: int = 0,
) -> str:
    """Write a synthetic finished store at ``path`` and return ``path``.

    ``n_per_split`` ok utterances per split (``round(bonafide_share * n)`` bona fide, except in
    the ``spoof_only`` splits), plus ``failed_per_split`` failed ones (no frames); lengths are
    uniform in ``frames`` (inclusive). ``weights_seed`` sets the codebooks and the weights sha256
    (stores with different values look like different codecs). ``dataset`` is the dataset name
    recorded in the attributes (it decides the official score format).
    """
    rng = np.random.default_rng(seed)
    codebooks = np.random.default_rng(weights_seed).standard_normal((n_q, codebook_size, dim)).astype(np.float32)
    half = codebook_size // 2
    rows, codes, latents = [], [], []
    for split in splits:
        n_bona = 0 if split in spoof_only else int(round(bonafide_share * n_per_split))
        labels = ["bonafide"] * n_bona + ["spoof"] * (n_per_split - n_bona) + ["spoof"] * failed_per_split
        for i, label in enumerate(labels):
            failed = i >= n_per_split
            n = 0 if failed else int(rng.integers(frames[0], frames[1] + 1))
            utt = rng.integers(0, codebook_size, size=(n, n_q))
            low = 0 if label == "bonafide" else half
            signal = rng.random((n, informative)) >= noise
            utt[:, :informative] = np.where(signal, rng.integers(low, low + half, size=(n, informative)), utt[:, :informative])
            codes.append(utt.astype(np.uint16))
            if latent:
                emb = codebooks[np.arange(n_q)[None, :], utt].sum(axis=1)
                latents.append((emb + rng.standard_normal(emb.shape)).astype(np.float16))
            rows.append({
                "utt_id": f"LA_{_PREFIX.get(split, split)}_{len(rows):07d}",
                "speaker": f"LA_{9000 + i % 4:04d}",
                "system": "bonafide" if label == "bonafide" else ATTACKS[i % len(ATTACKS)],
                "codec": CODECS[i % len(CODECS)],
                "label": label,
                "split": split,
                "path": f"/synthetic/{split}/{len(rows):07d}.flac",
                "duration": n / 75.0,
                "status": "failed" if failed else "ok",
                "n_frames": n,
                "n_windows": 0 if failed else 1,
                "sample_rate": 16000,
                "channels": 1,
            })
    table = pd.DataFrame(rows)
    offsets = np.concatenate([[0], np.cumsum(table["n_frames"].to_numpy())]).astype(np.int64)
    table["frame_offset"] = offsets[:-1]
    all_codes = np.concatenate(codes)

    root = zarr.open_group(path, mode="w")
    root.create_array(sf.CODEBOOKS, data=codebooks)
    root.create_array(sf.CODES, data=all_codes)
    root.create_array(sf.OFFSETS, data=offsets)
    if latent:
        root.create_array(sf.LATENT, data=np.concatenate(latents))
    files = StoreFiles(path)
    files.write_table(sf.UTTERANCES, table)
    failed_rows = table[table["status"] == "failed"]
    failures = pd.DataFrame({"utt_id": failed_rows["utt_id"], "path": failed_rows["path"],
                             "stage": "decode", "reason": "synthetic failure"}, columns=list(sf.FAILURE_COLUMNS))
    files.write_table(sf.FAILURES, failures)
    sha = hashlib.sha256(codebooks.tobytes()).hexdigest()
    root.attrs.update({
        "format": sf.FORMAT,
        "format_version": sf.FORMAT_VERSION,
        "state": sf.STATE_COMPLETE,
        "codec": {"name": "encodec_24khz", "sample_rate": 24000, "frame_rate": 75, "n_q": n_q,
                  "bandwidth": 0.75 * n_q, "codebook_size": codebook_size, "dim": dim,
                  "parameters": 14851810},
        "weights": {"source": "synthetic", "sha256": sha, "trained": False,
                    "label": f"SYNTHETIC test codebooks, weights sha256 {sha[:12]}"},
        "dataset": {"name": dataset, "root": "/synthetic", "splits": sorted(splits)},
        "config": {"latent": latent},
        "summary": {"utterances": len(table), "ok": int((table["status"] == "ok").sum()),
                    "failed": len(failures), "frames": int(offsets[-1])},
    })
    return path


def tiny_config(**overrides) -> TrainConfig:
    """A TrainConfig small enough for tests on these stores: 0.8 s crops (60 frames), a 16-unit
    LSTM head, no warm-up, no early stopping, CPU; ``overrides`` replace any field."""
    values = dict(epochs=2, batch_size=8, lr=1e-2, warmup_steps=0, crop_seconds=0.8, patience=0,
                  head_kwargs={"proj_dim": 16, "hidden_dim": 16}, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run torch on one thread: these models are tiny, and on a busy 2-core machine OpenMP's
    spinning threads make each step up to 100x slower. Import this fixture into a test module
    to apply it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

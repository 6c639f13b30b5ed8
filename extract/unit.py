"""One work unit: decode, encode and write a fixed run of consecutive utterances.

This is what a dask worker runs. The codec is built once per worker process and reused for every
unit it gets. Audio for the next batch is decoded in a thread while the current batch encodes.
A unit writes the streams its settings name: the store's own (``codes``, ``latent``, ``energy``),
or one stream added to a finished store (then into that stream's group).
"""

from __future__ import annotations

import hashlib
import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from store.format import CODES, ENERGY, LATENT, WEIGHTS, StoreFiles
from store.writer import PartData, write_part

from .audio import (
    CODEC_SAMPLE_RATE,
    AudioError,
    frame_energy,
    load_audio,
    probe,
    resampled_length,
)
from .codec import HOP_LENGTH, WeightsError, new_model
from .encoder import BatchEncoder

CODEC_STREAMS = (CODES, LATENT)
"""Streams that need the codec's encoder."""
STREAMS = (CODES, LATENT, ENERGY)
"""Every stream a unit can write."""


@dataclass(frozen=True)
class EncoderSettings:
    """Everything a worker needs to rebuild the exact codec and encoder, and what to write.

    ``streams``: the streams to write (a subset of :data:`STREAMS`); ``group``: where their parts go
    ("" for the store's own streams, ``streams/NAME`` for a stream added to a finished store)."""

    store: str
    weights_sha256: str
    bandwidth: float
    device: str
    window_seconds: float
    min_batch_seconds: float
    batch_seconds: float
    max_seconds: float
    torch_threads: int | None
    streams: tuple[str, ...] = (CODES, LATENT)
    group: str = ""


@dataclass(frozen=True)
class UnitTask:
    """``rows``: (plan row, audio path) to extract; ``skipped``: (row, reason) recorded as failed
    without reading the audio (utterances whose extraction already failed in the store)."""

    unit: int
    rows: tuple[tuple[int, str], ...]
    settings: EncoderSettings
    skipped: tuple[tuple[int, str], ...] = ()


@lru_cache(maxsize=2)
def _encoder(store: str, weights_sha256: str, bandwidth: float, device: str, latent: bool, window_seconds: float,
             min_batch_seconds: float, torch_threads: int | None) -> BatchEncoder:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    data = StoreFiles(store).read_bytes(WEIGHTS)
    if hashlib.sha256(data).hexdigest() != weights_sha256:
        raise WeightsError(f"{store}/{WEIGHTS}: sha256 differs from the store's attributes")
    model = new_model()
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return BatchEncoder(model, bandwidth, device=device, latent=latent, window_seconds=window_seconds,
                        min_batch_seconds=min_batch_seconds)


def encoder_for(settings: EncoderSettings) -> BatchEncoder:
    """The worker's encoder for ``settings`` (built once per process and settings)."""
    return _encoder(settings.store, settings.weights_sha256, settings.bandwidth, settings.device,
                    LATENT in settings.streams, settings.window_seconds, settings.min_batch_seconds,
                    settings.torch_threads)


def length_batches(lengths: dict[int, int], budget: int) -> list[list[int]]:
    """Group rows longest first so that each batch's padded size (rows x longest) fits ``budget``
    samples. ``lengths``: row -> samples at the codec's rate."""
    order = sorted(lengths, key=lambda r: (-lengths[r], r))
    batches: list[list[int]] = []
    for row in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(row)
        else:
            batches.append([row])
    return batches


def _probe_rows(task: UnitTask, records: dict[int, dict]) -> dict[int, int]:
    """Read each file's header; record the failures; return row -> samples at the codec's rate."""
    settings = task.settings
    lengths: dict[int, int] = {}
    for row, path in task.rows:
        try:
            info = probe(path)
        except AudioError as err:
            records[row] = {"row": row, "status": "failed", "stage": "audio", "reason": str(err)}
            continue
        records[row] = {"row": row, "sample_rate": info.sample_rate, "channels": info.channels,
                        "duration": info.duration}
        if info.duration > settings.max_seconds:
            records[row].update(status="failed", stage="audio",
                                reason=f"longer than max_seconds={settings.max_seconds:g} s ({info.duration:.1f} s)")
            continue
        lengths[row] = resampled_length(info.frames, info.sample_rate)
    return lengths


def _load(paths: dict[int, str], batch: list[int]) -> dict[int, torch.Tensor | AudioError]:
    out: dict[int, torch.Tensor | AudioError] = {}
    for row in batch:
        try:
            out[row] = load_audio(paths[row])
        except AudioError as err:
            out[row] = err
    return out


def run_unit(task: UnitTask) -> dict:
    """Extract one unit and commit it. Returns counts for the progress bar."""
    if not isinstance(task, UnitTask):  # a unit of another kind of stream (extract.ssl_stream) runs itself
        return task.run()
    settings = task.settings
    streams = settings.streams
    encoder = encoder_for(settings) if set(streams) & set(CODEC_STREAMS) else None
    records: dict[int, dict] = {row: {"row": row, "status": "failed", "stage": "store", "reason": reason}
                                for row, reason in task.skipped}
    paths = dict(task.rows)
    lengths = _probe_rows(task, records)
    features: dict[int, dict[str, np.ndarray]] = {}
    batches = length_batches(lengths, max(1, int(settings.batch_seconds * CODEC_SAMPLE_RATE)))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load, paths, batches[0]) if batches else None
        for k in range(len(batches)):
            loaded = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(_load, paths, batches[k + 1])
            good = [r for r in batches[k] if isinstance(loaded[r], torch.Tensor)]
            for r in batches[k]:
                if not isinstance(loaded[r], torch.Tensor):
                    records[r].update(status="failed", stage="audio", reason=str(loaded[r]))
            encoded = encoder.encode([loaded[r] for r in good]) if encoder is not None else [None] * len(good)
            for r, result in zip(good, encoded):
                wav = loaded[r]
                out: dict[str, np.ndarray] = {}
                if result is not None:
                    out[CODES], out[LATENT] = result.codes, result.latent
                if ENERGY in streams:
                    out[ENERGY] = frame_energy(wav, HOP_LENGTH)
                features[r] = {name: out[name] for name in streams}
                n_frames = {len(a) for a in features[r].values()}
                if len(n_frames) != 1:
                    raise RuntimeError(f"{paths[r]}: streams {list(streams)} have different frame counts {n_frames}")
                records[r].update(status="ok", n_frames=n_frames.pop(),
                                  n_windows=result.n_windows if result is not None else 1)

    order = sorted(records)
    ordered = [records[row] for row in order]
    ok_rows = [r["row"] for r in ordered if r["status"] == "ok"]
    for r in ordered:  # NaN is not JSON: the records are stored as zarr attributes
        if "duration" in r and not math.isfinite(r["duration"]):
            r["duration"] = None
    arrays = {name: [features[r][name] for r in ok_rows] for name in streams}
    write_part(settings.store, PartData(unit=task.unit, records=ordered, arrays=arrays), settings.group)
    return {
        "unit": task.unit,
        "utterances": len(ordered),
        "failed": len(ordered) - len(ok_rows),
        "audio_seconds": float(sum(records[r].get("duration") or 0.0 for r in ok_rows)),
    }

"""One work unit: decode, encode and write a fixed run of consecutive utterances.

This is what a dask worker runs. The codec is built once per worker process and reused for every
unit it gets. Audio for the next batch is decoded in a thread while the current batch encodes.
"""

from __future__ import annotations

import hashlib
import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import torch

from .audio import CODEC_SAMPLE_RATE, AudioError, load_audio, probe, resampled_length
from .codec import WeightsError, new_model
from .encoder import BatchEncoder
from .store import PartData, write_part
from .storeformat import WEIGHTS, StoreFiles


@dataclass(frozen=True)
class EncoderSettings:
    """Everything a worker needs to rebuild the exact codec and encoder."""

    store: str
    weights_sha256: str
    bandwidth: float
    device: str
    latent: bool
    window_seconds: float
    min_batch_seconds: float
    batch_seconds: float
    max_seconds: float
    torch_threads: int | None


@dataclass(frozen=True)
class UnitTask:
    unit: int
    rows: tuple[tuple[int, str], ...]  # (plan row, audio path)
    settings: EncoderSettings


@lru_cache(maxsize=2)
def _encoder(settings: EncoderSettings) -> BatchEncoder:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    data = StoreFiles(settings.store).read_bytes(WEIGHTS)
    if hashlib.sha256(data).hexdigest() != settings.weights_sha256:
        raise WeightsError(f"{settings.store}/{WEIGHTS}: sha256 differs from the store's attributes")
    model = new_model()
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return BatchEncoder(
        model,
        settings.bandwidth,
        device=settings.device,
        latent=settings.latent,
        window_seconds=settings.window_seconds,
        min_batch_seconds=settings.min_batch_seconds,
    )


def _batches(lengths: dict[int, int], budget: int) -> list[list[int]]:
    """Group rows longest first so that each batch's padded size (rows x longest) fits the budget."""
    order = sorted(lengths, key=lambda r: (-lengths[r], r))
    batches: list[list[int]] = []
    for row in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(row)
        else:
            batches.append([row])
    return batches


def run_unit(task: UnitTask) -> dict:
    """Extract one unit and commit it. Returns counts for the progress bar."""
    settings = task.settings
    encoder = _encoder(settings)
    records: dict[int, dict] = {}
    paths = dict(task.rows)
    lengths: dict[int, int] = {}
    for row, path in task.rows:
        try:
            info = probe(path)
        except AudioError as err:
            records[row] = {"row": row, "status": "failed", "stage": "audio", "reason": str(err)}
            continue
        records[row] = {
            "row": row,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "duration": info.duration,
        }
        if info.duration > settings.max_seconds:
            records[row].update(status="failed", stage="audio", reason=f"longer than max_seconds={settings.max_seconds:g} s ({info.duration:.1f} s)")
            continue
        lengths[row] = resampled_length(info.frames, info.sample_rate)

    def load(batch: list[int]) -> dict[int, torch.Tensor | AudioError]:
        out: dict[int, torch.Tensor | AudioError] = {}
        for row in batch:
            try:
                out[row] = load_audio(paths[row])
            except AudioError as err:
                out[row] = err
        return out

    encoded = {}
    batches = _batches(lengths, max(1, int(settings.batch_seconds * CODEC_SAMPLE_RATE)))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for k in range(len(batches)):
            loaded = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(load, batches[k + 1])
            good = [r for r in batches[k] if isinstance(loaded[r], torch.Tensor)]
            for r in batches[k]:
                if not isinstance(loaded[r], torch.Tensor):
                    records[r].update(status="failed", stage="audio", reason=str(loaded[r]))
            for r, result in zip(good, encoder.encode([loaded[r] for r in good])):
                encoded[r] = result
                records[r].update(status="ok", n_frames=int(result.codes.shape[0]), n_windows=result.n_windows)

    ordered = [records[row] for row, _ in task.rows]
    ok_rows = [r["row"] for r in ordered if r["status"] == "ok"]
    for r in ordered:  # NaN is not JSON: the records are stored as zarr attributes
        if "duration" in r and not math.isfinite(r["duration"]):
            r["duration"] = None
    write_part(
        settings.store,
        PartData(
            unit=task.unit,
            records=ordered,
            codes=[encoded[r].codes for r in ok_rows],
            latent=[encoded[r].latent for r in ok_rows] if settings.latent else None,
        ),
    )
    return {
        "unit": task.unit,
        "utterances": len(ordered),
        "failed": len(ordered) - len(ok_rows),
        "audio_seconds": float(sum(records[r]["duration"] for r in ok_rows)),
    }

"""Work units: decode, encode and commit fixed runs of consecutive utterances.

This is what a dask worker runs (:func:`run_units`, on a few consecutive units at a time), or the
command itself with ``--workers 0`` (:func:`iter_units` over all of them). The codec is built once
per process and reused. Decoding runs ahead on helper threads (:mod:`extract.prefetch`), the calling
thread only encodes, and finished units are written by a writer thread (:mod:`extract.committer`).
A unit writes the streams its settings name: the store's own (``codes``, ``latent``, ``energy``),
or one stream added to a finished store (then into that stream's group).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from store.format import CODES, ENERGY, LATENT, WEIGHTS, StoreFiles
from store.writer import PartData

from .audio import (
    CODEC_SAMPLE_RATE,
    AudioError,
    frame_energy,
    load_audio,
    probe,
    resampled_length,
)
from .codec import HOP_LENGTH, WeightsError, new_model
from .committer import UnitCommitter
from .encoder import BatchEncoder
from .prefetch import keep_threads, prefetch

CODEC_STREAMS = (CODES, LATENT)
"""Streams that need the codec's encoder."""
STREAMS = (CODES, LATENT, ENERGY)
"""Every stream a unit can write."""


@dataclass(frozen=True)
class EncoderSettings:
    """Everything a worker needs to rebuild the exact codec and encoder, and what to write.

    ``streams``: the streams to write (a subset of :data:`STREAMS`); ``group``: where their parts go
    ("" for the store's own streams, ``streams/NAME`` for a stream added to a finished store);
    ``decode_threads``: helper threads decoding audio ahead of the encoder (results do not depend
    on it); ``torch_threads``: the encoder's (None: the process default); ``lease``: the token of the
    store's lease held by the run (`common.lease`), checked before writing."""

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
    decode_threads: int = 1
    lease: str | None = None


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
             min_batch_seconds: float, batch_seconds: float) -> BatchEncoder:
    data = StoreFiles(store).read_bytes(WEIGHTS)
    if hashlib.sha256(data).hexdigest() != weights_sha256:
        raise WeightsError(f"{store}/{WEIGHTS}: sha256 differs from the store's attributes")
    model = new_model()
    try:  # weights_only: a crafted file never runs code, it is refused
        model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - torch raises several types for unsafe or damaged files
        raise WeightsError(f"{store}/{WEIGHTS}: not a loadable EnCodec state dict ({type(err).__name__}: {err})") from None
    return BatchEncoder(model, bandwidth, device=device, latent=latent, window_seconds=window_seconds,
                        min_batch_seconds=min_batch_seconds, batch_seconds=batch_seconds)


def encoder_for(settings: EncoderSettings) -> BatchEncoder:
    """The worker's encoder for ``settings`` (built once per process and settings)."""
    return _encoder(settings.store, settings.weights_sha256, settings.bandwidth, settings.device,
                    LATENT in settings.streams, settings.window_seconds, settings.min_batch_seconds,
                    settings.batch_seconds)


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


@dataclass
class _Unit:
    """A unit in flight: its records (row -> record), its length-sorted batches of rows, the
    features of its encoded rows, and how many batches are still to encode."""

    task: UnitTask
    records: dict[int, dict]
    lengths: dict[int, int]
    batches: list[list[int]]
    features: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    remaining: int = 0


def _prepare(task: UnitTask) -> _Unit:
    """Probe a unit's files (headers only) and cut it into length-sorted batches."""
    records: dict[int, dict] = {row: {"row": row, "status": "failed", "stage": "store", "reason": reason}
                                for row, reason in task.skipped}
    lengths = _probe_rows(task, records)
    batches = length_batches(lengths, max(1, int(task.settings.batch_seconds * CODEC_SAMPLE_RATE)))
    return _Unit(task, records, lengths, batches, remaining=len(batches))


Decoded = tuple[torch.Tensor, np.ndarray | None]
"""One decoded utterance: wav [1, T] at the codec's rate, and its energy stream if asked."""


def _decode(unit: _Unit, batch: list[int], energy: bool) -> tuple[_Unit, list[int], dict[int, Decoded | AudioError]]:
    """Decode one batch's files (on a helper thread); a bad file gives its AudioError."""
    paths = dict(unit.task.rows)
    out: dict[int, Decoded | AudioError] = {}
    for row in batch:
        try:
            wav = load_audio(paths[row])
        except AudioError as err:
            out[row] = err
        else:
            out[row] = (wav, frame_energy(wav, HOP_LENGTH) if energy else None)
    return unit, batch, out


def _jobs(tasks: list[UnitTask]) -> Iterator[tuple[Callable[[], tuple], int]]:
    """Decode jobs, (function, decoded samples): one per batch, in unit order; a unit without
    batches gets one empty job so that it is still committed. Each unit is probed while the one
    before it decodes."""
    energy = ENERGY in tasks[0].settings.streams
    for unit in prefetch(((functools.partial(_prepare, task), 0) for task in tasks), threads=1, depth=2):
        for batch in unit.batches or [[]]:
            yield functools.partial(_decode, unit, batch, energy), sum(unit.lengths[r] for r in batch)


def _encode_batch(unit: _Unit, batch: list[int], loaded: dict[int, Decoded | AudioError],
                  encoder: BatchEncoder | None) -> None:
    streams = unit.task.settings.streams
    paths = dict(unit.task.rows)
    good = [r for r in batch if not isinstance(loaded[r], AudioError)]
    for r in batch:
        if isinstance(loaded[r], AudioError):
            unit.records[r].update(status="failed", stage="audio", reason=str(loaded[r]))
    encoded = encoder.encode([loaded[r][0] for r in good]) if encoder is not None else [None] * len(good)
    for r, result in zip(good, encoded):
        out: dict[str, np.ndarray] = {}
        if result is not None:
            out[CODES], out[LATENT] = result.codes, result.latent
        if ENERGY in streams:
            out[ENERGY] = loaded[r][1]
        unit.features[r] = {name: out[name] for name in streams}
        n_frames = {len(a) for a in unit.features[r].values()}
        if len(n_frames) != 1:
            raise RuntimeError(f"{paths[r]}: streams {list(streams)} have different frame counts {n_frames}")
        unit.records[r].update(status="ok", n_frames=n_frames.pop(),
                               n_windows=result.n_windows if result is not None else 1)


def _part(unit: _Unit) -> tuple[PartData, dict]:
    """The unit's part (records in row order, arrays of its ok rows) and its progress result."""
    records = unit.records
    ordered = [records[row] for row in sorted(records)]
    for r in ordered:
        if "duration" in r and not math.isfinite(r["duration"]):  # NaN is not JSON: records are zarr attributes
            r["duration"] = None
    ok_rows = [r["row"] for r in ordered if r["status"] == "ok"]
    arrays = {name: [unit.features[r][name] for r in ok_rows] for name in unit.task.settings.streams}
    result = {
        "unit": unit.task.unit,
        "utterances": len(ordered),
        "failed": len(ordered) - len(ok_rows),
        "audio_seconds": float(sum(records[r].get("duration") or 0.0 for r in ok_rows)),
    }
    return PartData(unit=unit.task.unit, records=ordered, arrays=arrays), result


def iter_units(tasks: list[UnitTask]) -> Iterator[dict]:
    """Extract and commit ``tasks`` (units of the same extraction) as one pipeline; yield each
    unit's counts (for the progress bar) once it is committed, in order.

    Three stages overlap: helper threads probe and decode the audio ahead (a bounded queue:
    ``decode_threads`` threads, a few batches and at most two batches' worth of samples ahead),
    this thread encodes batch after batch, and a writer thread commits each finished unit. A unit's
    batches, and so its features, depend only on the unit, never on which units run together."""
    if not tasks:
        return
    if not isinstance(tasks[0], UnitTask):  # units of another kind of stream (extract.ssl_stream) run themselves
        for task in tasks:
            yield task.run()
        return
    settings = tasks[0].settings
    budget = max(1, int(settings.batch_seconds * CODEC_SAMPLE_RATE))
    with keep_threads(settings.torch_threads):
        encoder = encoder_for(settings) if set(settings.streams) & set(CODEC_STREAMS) else None
        committer = UnitCommitter(settings.store, settings.group, lease=settings.lease)
        jobs = _jobs(tasks)
        try:
            for unit, batch, loaded in prefetch(jobs, threads=settings.decode_threads,
                                                depth=2 * settings.decode_threads, max_cost=2 * budget):
                if batch:
                    _encode_batch(unit, batch, loaded, encoder)
                    unit.remaining -= 1
                if unit.remaining == 0:
                    committer.submit(*_part(unit))
                yield from committer.done()
        finally:
            jobs.close()
            rest = committer.close()  # the finished units queued before an error are still committed
        yield from rest


def run_units(tasks: list[UnitTask]) -> list[dict]:
    """:func:`iter_units` as one call (what a dask task runs)."""
    return list(iter_units(tasks))


def run_unit(task: UnitTask) -> dict:
    """Extract one unit and commit it. Returns counts for the progress bar."""
    (result,) = run_units([task])
    return result


def task_slices(tasks: list[UnitTask], workers: int, most: int = 8) -> list[list[UnitTask]]:
    """Cut ``tasks`` into runs of consecutive units, one dask task each: about four per worker (so
    that the workers finish together), at most ``most`` units (so that progress is seen)."""
    size = max(1, min(most, -(-len(tasks) // (4 * max(1, workers)))))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def warm_up() -> None:
    """Nothing: sent to a fresh worker so that it imports this module (torch, the codec) before
    its first unit arrives."""

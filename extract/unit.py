"""Work units: decode, compute and commit fixed runs of consecutive utterances, for any stream back-end.

This is what a dask worker runs (:func:`run_units`, on a few consecutive units at a time), or the
command itself with ``--workers 0`` (:func:`iter_units` over all of them). A unit's back-end
(`extract.backend.StreamBackend`: the codec's streams, the SSL stream, ...) says which samples of each
utterance it reads, how to decode them and how to compute a batch; its model is built once per
process and reused. Decoding runs ahead on helper threads (:mod:`extract.prefetch`), the calling
thread only computes, and finished units are written by a writer thread (:mod:`extract.committer`)
into the back-end's group (the store's own streams, or a stream added to a finished store).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from store.writer import PartData

from .audio import AudioError
from .backend import UnitTask
from .committer import UnitCommitter
from .prefetch import keep_threads, prefetch

__all__ = ["UnitTask", "iter_units", "length_batches", "run_unit", "run_units", "task_slices", "warm_up"]


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


def _probe_rows(task: UnitTask, records: dict[int, dict]) -> dict[int, tuple[int, int]]:
    """Read each file's header; record the failures; return row -> (first sample, samples) at the
    back-end's rate."""
    backend = task.settings
    spans: dict[int, tuple[int, int]] = {}
    for row, path, split in task.rows:
        try:
            info = backend.audio.probe(path, row)
        except AudioError as err:
            records[row] = {"row": row, "status": "failed", "stage": "audio", "reason": str(err)}
            continue
        records[row] = {"row": row, "sample_rate": info.sample_rate, "channels": info.channels,
                        "duration": info.duration}
        if info.duration > backend.max_seconds:
            records[row].update(status="failed", stage="audio",
                                reason=f"longer than max_seconds={backend.max_seconds:g} s ({info.duration:.1f} s)")
            continue
        span = backend.span(info, split)
        if isinstance(span[0], str):
            records[row].update(status="failed", stage=span[0], reason=span[1])
            continue
        spans[row] = span
    return spans


@dataclass
class _Unit:
    """A unit in flight: its records (row -> record), the spans of its rows to compute, its
    length-sorted batches of rows, the arrays of its computed rows, and how many batches are still
    to compute."""

    task: UnitTask
    records: dict[int, dict]
    spans: dict[int, tuple[int, int]]
    batches: list[list[int]]
    features: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    remaining: int = 0


def _prepare(task: UnitTask) -> _Unit:
    """Probe a unit's files (headers only) and cut it into length-sorted batches."""
    records: dict[int, dict] = {row: {"row": row, "status": "failed", "stage": "store", "reason": reason}
                                for row, reason in task.skipped}
    spans = _probe_rows(task, records)
    budget = max(1, int(task.settings.batch_seconds * task.settings.sample_rate))
    batches = length_batches({row: n for row, (_, n) in spans.items()}, budget)
    return _Unit(task, records, spans, batches, remaining=len(batches))


def _decode(unit: _Unit, batch: list[int]) -> tuple[_Unit, list[int], dict[int, Any]]:
    """Decode one batch's files (on a helper thread); a bad file gives its AudioError."""
    paths = {row: path for row, path, _ in unit.task.rows}
    out: dict[int, Any] = {}
    for row in batch:
        try:
            out[row] = unit.task.settings.load(paths[row], row, unit.spans[row])
        except AudioError as err:
            out[row] = err
    return unit, batch, out


def _jobs(tasks: list[UnitTask]) -> Iterator[tuple[Callable[[], tuple], int]]:
    """Decode jobs, (function, decoded samples): one per batch, in unit order; a unit without
    batches gets one empty job so that it is still committed. Each unit is probed while the one
    before it decodes."""
    for unit in prefetch(((functools.partial(_prepare, task), 0) for task in tasks), threads=1, depth=2):
        for batch in unit.batches or [[]]:
            yield functools.partial(_decode, unit, batch), sum(unit.spans[r][1] for r in batch)


def _encode_batch(unit: _Unit, batch: list[int], loaded: dict[int, Any], encoder: Any) -> None:
    """Compute one batch's arrays with the back-end's model ``encoder``; record each row."""
    backend = unit.task.settings
    paths = {row: path for row, path, _ in unit.task.rows}
    good = [r for r in batch if not isinstance(loaded[r], AudioError)]
    for r in batch:
        if isinstance(loaded[r], AudioError):
            unit.records[r].update(status="failed", stage="audio", reason=str(loaded[r]))
    if not good:
        return
    frame_arrays = backend.frame_arrays()
    for r, (arrays, n_windows) in zip(good, backend.compute(encoder, [loaded[r] for r in good],
                                                             [unit.spans[r] for r in good])):
        unit.features[r] = arrays
        n_frames = {len(arrays[name]) for name in frame_arrays}
        if len(n_frames) != 1:
            raise RuntimeError(f"{paths[r]}: streams {list(frame_arrays)} have different frame counts {n_frames}")
        unit.records[r].update(status="ok", n_frames=n_frames.pop(), n_windows=n_windows)


def _part(unit: _Unit) -> tuple[PartData, dict]:
    """The unit's part (records in row order, arrays of its ok rows) and its progress result."""
    records = unit.records
    ordered = [records[row] for row in sorted(records)]
    for r in ordered:
        if "duration" in r and not math.isfinite(r["duration"]):  # NaN is not JSON: records are zarr attributes
            r["duration"] = None
    ok_rows = [r["row"] for r in ordered if r["status"] == "ok"]
    backend = unit.task.settings
    names = (*backend.frame_arrays(), *backend.utterance_arrays)
    arrays = {name: [unit.features[r][name] for r in ok_rows] for name in names}
    result = {
        "unit": unit.task.unit,
        "utterances": len(ordered),
        "failed": len(ordered) - len(ok_rows),
        "audio_seconds": float(sum(records[r].get("duration") or 0.0 for r in ok_rows)),
    }
    return PartData(unit=unit.task.unit, records=ordered, arrays=arrays), result


def iter_units(tasks: list[UnitTask]) -> Iterator[dict]:
    """Extract and commit ``tasks`` (units of the same back-end and settings) as one pipeline; yield
    each unit's counts (for the progress bar) once it is committed, in order.

    Three stages overlap: helper threads probe and decode the audio ahead (a bounded queue:
    ``decode_threads`` threads, a few batches and at most two batches' worth of samples ahead),
    this thread computes batch after batch, and a writer thread commits each finished unit. A unit's
    batches, and so its arrays, depend only on the unit, never on which units run together."""
    if not tasks:
        return
    backend = tasks[0].settings
    budget = max(1, int(backend.batch_seconds * backend.sample_rate))
    with keep_threads(backend.torch_threads):
        model, opened = None, False
        committer = UnitCommitter(backend.store, backend.group, lease=backend.lease)
        jobs = _jobs(tasks)
        try:
            for unit, batch, loaded in prefetch(jobs, threads=backend.decode_threads,
                                                depth=2 * backend.decode_threads, max_cost=2 * budget):
                if batch:
                    if not opened:  # built once the first batch needs it (cached per process)
                        model, opened = backend.open(), True
                    _encode_batch(unit, batch, loaded, model)
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
    """Sent to a fresh worker so that it imports this module and the stream back-ends (torch, the
    codec, the SSL model) before its first unit arrives."""
    from . import codec_stream, ssl_recode, ssl_stream  # noqa: F401, PLC0415

"""The extraction driver: one path from a stream back-end to committed, finished streams.

Every stream is extracted the same way, whatever computes its frames (`extract.backend`: the codec's
streams, the SSL stream, a later augmented view): the store's utterances, in plan order, are cut into
work units of ``unit_size`` consecutive rows (:func:`plan_units`; a unit already committed is
skipped, so a re-run resumes); the units run in this process (`extract.unit.iter_units`) or through
``submit`` (e.g. on dask workers), each committed by its records written after its data
(`store.writer.write_part`), fenced by the store's lease; progress is reported unit by unit
(:func:`run_tasks`). :func:`add_stream` adds a back-end's stream to a finished store: it records the
back-end's settings fingerprint when it starts and refuses other settings on a resume, gathers the
back-end's per-utterance arrays, and finishes the stream (`store.writer.finish_stream`). The store's
own streams are planned and run by the same two functions (`extract.run`), and `verify --repair`
re-runs units through them (`extract.repair`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import zarr

from common.lease import Lease
from common.provenance import device_label, provenance
from store import format as sf
from store.format import StoreFiles
from store.writer import COMPRESSORS, StoreError, create_stream, done_units, finish_stream

from .backend import StreamBackend, UnitTask
from .unit import iter_units

Submit = Callable[[list[UnitTask]], Iterator[dict]]
"""Runs tasks and yields their results as they finish (None: in this process, in order)."""
SKIPPED = "extraction failed in this store"


def n_units(n_rows: int, unit_size: int) -> int:
    return -(-n_rows // unit_size)


def plan_units(backend: StreamBackend, rows: list[tuple[int, str, str]], unit_size: int, done=(),
               skip: dict[int, str] | None = None, units: list[int] | None = None) -> list[UnitTask]:
    """The tasks of every unit of ``rows`` ((row, path, split) in plan order) not in ``done`` (or
    of just ``units``); rows in ``skip`` are recorded as failed with their reason, unread."""
    skip = skip or {}
    tasks = []
    for unit in units if units is not None else range(n_units(len(rows), unit_size)):
        if unit in done:
            continue
        chunk = rows[unit * unit_size : (unit + 1) * unit_size]
        tasks.append(UnitTask(unit, tuple(r for r in chunk if r[0] not in skip), backend,
                              tuple((r[0], skip[r[0]]) for r in chunk if r[0] in skip)))
    return tasks


def run_tasks(tasks: list[UnitTask], submit: Submit | None, progress: Callable[[dict], None] | None,
              lease: Lease | None = None) -> None:
    """Run ``tasks``; after each committed unit check the lease (another process took the store
    over: stop before finishing anything) and report its counts to ``progress``."""
    results = submit(tasks) if submit is not None else iter_units(tasks)
    for result in results:
        if lease is not None:
            lease.check()
        if progress is not None:
            progress(result)


def differences(stored: dict, wanted: dict, holder: str = "store", defaults: dict | None = None) -> str:
    """"KEY: HOLDER has X, asked Y" for each setting of ``wanted`` that ``stored`` holds otherwise
    ("" when none): the fingerprint check of a resume or an addition. ``defaults``: what a key
    ``stored`` lacks means (a setting newer than the stream)."""
    defaults = defaults or {}
    return ", ".join(f"{k}: {holder} has {stored.get(k, defaults.get(k))!r}, asked {wanted[k]!r}" for k in wanted
                     if stored.get(k, defaults.get(k)) != wanted[k])


def store_rows(files: StoreFiles, failed_reason: str = SKIPPED) -> tuple[list[tuple[int, str, str]], dict[int, str]]:
    """The finished store's (row, path, split) in plan order, and its failed rows with ``failed_reason``."""
    table = files.read_table(sf.UTTERANCES)
    rows = list(zip(range(len(table)), table["path"].tolist(), table["split"].astype(str).tolist()))
    skip = {int(r): failed_reason for r in np.flatnonzero(table["status"].to_numpy() != "ok")}
    return rows, skip


def _write_utterance_arrays(url: str, backend: StreamBackend, units: int, n_rows: int) -> None:
    """``GROUP/NAME`` int64 [n_utts] of each per-utterance array, from the units' parts (before they
    are dropped); -1 where an utterance has none."""
    root = zarr.open_group(url, mode="r")
    done = sorted(done_units(url, units, backend.group).items())
    for name in backend.utterance_arrays:
        values = np.full(n_rows, -1, dtype=np.int64)
        for unit, records in done:
            ok = [r["row"] for r in records if r["status"] == "ok"]
            if ok:
                values[ok] = root[f"{sf.part_name(unit, backend.group)}/{name}"][...]
        zarr.open_group(url, mode="r+").create_array(f"{backend.group}/{name}", data=values, chunks=values.shape,
                                                     compressors=COMPRESSORS, overwrite=True)


def add_stream(backend: StreamBackend, unit_size: int, device: str, submit: Submit | None,
               log: Callable[[str], None], progress: Callable[[dict], None] | None, lease: Lease | None = None,
               skip: dict[int, str] | None = None) -> int:
    """Add (or finish adding) ``backend``'s stream to the finished store ``backend.store``; returns
    the number of units run (0: it was complete). Nothing else in the store is touched. StoreError
    when the store already has that stream made with other settings (its fingerprint). ``skip``:
    rows recorded as failed with their reason, unread (an augmented view's rows outside its splits),
    besides those that failed in the store."""
    started = time.perf_counter()
    url, group = backend.store, backend.group
    name = ", ".join(backend.frame_arrays())
    files = StoreFiles(url)
    fingerprint = {**backend.fingerprint(), **backend.audio.fingerprint(), "unit_size": unit_size}
    label = f" ({backend.label})" if backend.label else ""
    stream_attrs = files.read_group_attrs(group) if files.exists(f"{group}/zarr.json") else {}
    if "config" in stream_attrs:  # started before (a view's group may hold only the view's record yet)
        differ = differences(stream_attrs.get("config", {}), fingerprint, "stream", backend.fingerprint_defaults)
        if differ:
            hint = f", or {backend.rename_hint}" if backend.rename_hint else ""
            raise StoreError(f"{url} already has a stream {name!r} made otherwise ({differ}); ask for the same "
                             f"settings{hint}")
        if stream_attrs.get("state") == sf.STATE_COMPLETE:
            log(f"stream {name!r} is already complete{label}")
            return 0
        log(f"resuming the addition of stream {name!r} to {url}")
    else:
        specs = backend.new_specs(files.read_group_attrs())
        create_stream(url, specs if len(specs) > 1 else specs[0],
                      {"config": fingerprint, "provenance": provenance(device_label(device))}, group)
        log(f"adding stream{'s' if len(specs) > 1 else ''} {', '.join(s.describe() for s in specs)} to {url}"
            f"{f' ({group})' if backend.where else ''}{label}; its other streams are not touched")
    rows, failed = store_rows(files)
    skip = {**(skip or {}), **failed}
    backend.prepare(rows, skip, log)
    units = n_units(len(rows), unit_size)
    done = done_units(url, units, group)
    tasks = plan_units(backend, rows, unit_size, done, skip)
    if done:
        log(f"{len(done)} of {units} work units of stream {name!r} already done; running {len(tasks)}")
    run_tasks(tasks, submit, progress, lease)
    _write_utterance_arrays(url, backend, units, len(rows))
    records = finish_stream(url, name, units, {"finished_by": provenance(device_label(device))}, group=group)
    _log_added(files, backend, records, len(skip), time.perf_counter() - started, log)
    return len(tasks)


def _log_added(files: StoreFiles, backend: StreamBackend, records, skipped: int, seconds: float,
               log: Callable[[str], None]) -> None:
    table = files.read_table(sf.UTTERANCES)
    ok = (records["status"] == "ok").to_numpy()
    audio = max(float(table.loc[ok, "duration"].sum()), 1e-9)
    specs = sf.group_stream_specs(files.read_group_attrs(backend.group))
    raw = int(records["n_frames"].sum()) * sum(spec.frame_bytes for spec in specs)
    failed = int((~ok).sum()) - skipped
    note = f" ({backend.note()})" if backend.note() else ""
    log(f"stream {', '.join(backend.frame_arrays())!r}{f' of {backend.where}' if backend.where else ''} added in {seconds:.1f} s: {int(ok.sum())} utterances"
        + (f", {failed} failed ({backend.group}/{sf.FAILURES})" if failed else "")
        + f"; {raw / audio:,.0f} bytes per audio second uncompressed, {files.size(backend.group) / audio:,.0f} on disk"
        + note)

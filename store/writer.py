"""The feature store writer: create a store, write work-unit parts, finish it; add a stream later.

See :mod:`store.format` for the layout. Writers never share a chunk: each work unit has its own part
group, and only :func:`finish_store` / :func:`finish_stream` (one process) write the final,
sharded arrays. The extractor (`extract.run`) drives these functions; tests write synthetic stores
through them too, so every store a reader meets was laid down by this code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import zarr

from common.faults import point
from common.lease import LOCK, check_token

from . import format as sf
from .codebooks import CodeUsage
from .format import StoreFiles, StreamSpec

COMPRESSORS = zarr.codecs.ZstdCodec(level=0, checksum=True)
"""Zstandard with a per-chunk checksum, so that `pipeline verify` detects any corrupted chunk."""

RECORD_COLUMNS = ("row", "status", "n_frames", "n_windows", "sample_rate", "channels", "duration", "stage", "reason")
"""What a unit records per utterance (an added stream's units record row, status, n_frames, stage, reason)."""


class StoreError(RuntimeError):
    """The store cannot be created, resumed or finished as asked."""


@dataclass
class PartData:
    """What one work unit produced: its records (one per utterance, in row order) and, per stream,
    the arrays of its ok utterances in record order (``{"codes": [[frames, n_q] uint16, ...], ...}``)."""

    unit: int
    records: list[dict]
    arrays: dict[str, list[np.ndarray]]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def create_store(
    url: str,
    attrs: dict,
    plan: pd.DataFrame,
    problems: pd.DataFrame,
    streams: list[StreamSpec],
    tables: dict[str, np.ndarray],
    weights: bytes | None = None,
) -> None:
    """Lay down a new store in state "extracting": attributes (with the ``streams`` it will hold),
    the plan, the protocol problems, the streams' tables (``{"codebooks": [n_q, K, D]}``) and the
    codec weights file."""
    files = StoreFiles(url)
    if files.fs.exists(files.root):
        ours = (sf.WEIGHTS, sf.PLAN, sf.PROBLEMS, *tables, "zarr.json")
        entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in files.fs.ls(files.root, detail=False)]
        # a killed creation may leave its temporary files (NAME.tmp, NAME.<uuid>.partial) behind
        foreign = [e for e in entries if not e.startswith(LOCK) and not any(e == o or e.startswith(o + ".") for o in ours)]
        if foreign:
            raise StoreError(f"{url} exists and is not a feature store (it holds {foreign[0]}); choose another --out")
        for entry in entries:  # an unfinished creation is made again from scratch; the lease stays
            if not entry.startswith(LOCK):
                files.remove(entry)
    root = zarr.open_group(url, mode="a")
    if weights is not None:
        files.write_bytes(sf.WEIGHTS, weights)
    files.write_table(sf.PLAN, plan)
    files.write_table(sf.PROBLEMS, problems)
    for name, data in tables.items():
        root.create_array(name, data=data, chunks=data.shape, compressors=COMPRESSORS)
    point("create:before-attributes")
    # attributes last: a store without them is an unfinished creation and is simply made again
    files.update_group_attrs({**attrs, "streams": {s.name: s.to_attrs() for s in streams}, "format": sf.FORMAT,
                              "format_version": sf.FORMAT_VERSION, "state": sf.STATE_EXTRACTING, "created": now()})


def write_part(url: str, part: PartData, group: str = "", lease: str | None = None) -> None:
    """Write one unit's data, then its records: the records are the unit's commit. ``group``: ""
    for the streams written with the store, ``streams/NAME`` for an added stream. ``lease``: the
    token of the store's lease this unit was given (`common.lease`); when the lease has passed to
    another process meanwhile (this worker outlived a killed run), nothing is written (LeaseLost).

    Whatever an earlier, interrupted attempt left of the part (arrays, a torn zarr.json) is removed
    first."""
    check_token(url, lease)
    node = zarr.open_group(url, mode="r+").create_group(sf.part_name(part.unit, group), overwrite=True)
    for name, blocks in part.arrays.items():
        if blocks:
            data = np.concatenate(blocks)
            node.create_array(name, data=data, chunks=data.shape, compressors=COMPRESSORS, overwrite=True)
            point("part:between-arrays")
    point("part:before-records")
    check_token(url, lease)
    node.attrs["records"] = part.records


def done_units(url: str, n_units: int, group: str = "") -> dict[int, list[dict]]:
    """Records of every committed unit (a unit whose metadata is unreadable counts as not done)."""
    files = StoreFiles(url)
    done = {}
    for unit in range(n_units):
        name = sf.part_name(unit, group)
        if not files.exists(f"{name}/zarr.json"):
            continue
        try:
            records = files.read_group_attrs(name).get("records")
        except ValueError:  # a torn zarr.json from a kill mid-write
            continue
        if records is not None:
            done[unit] = records
    return done


def _part_blocks(url: str, n_units: int, group: str, name: str) -> Iterator[np.ndarray]:
    root = zarr.open_group(url, mode="r")
    for unit in range(n_units):
        try:
            yield root[f"{sf.part_name(unit, group)}/{name}"][...]
        except KeyError:
            continue  # a unit whose utterances all failed has no data


def write_concatenated(root: zarr.Group, spec: StreamSpec, blocks: Iterator[np.ndarray], frames: int,
                       chunk: int | None = None, shard_chunks: int = sf.SHARD_CHUNKS) -> None:
    """Write row blocks into the stream's new sharded array [frames, *frame_shape], one whole shard at
    a time (sharded writes must not overlap, and whole-shard writes need no read-modify-write).
    ``chunk``: frames per chunk (default: the spec's); ``shard_chunks``: chunks per shard."""
    chunk = chunk or spec.chunk_frames()
    shard = chunk * shard_chunks
    if frames < shard:  # small stores: no sharding, chunks no larger than the data
        chunk = shard = max(1, min(chunk, frames))
        shards = None
    else:
        shards = (shard, *spec.frame_shape)
    shape = (frames, *spec.frame_shape)
    array = root.create_array(spec.array, shape=shape, dtype=spec.dtype, chunks=(chunk, *spec.frame_shape),
                              shards=shards, compressors=COMPRESSORS, overwrite=True)
    buffer, filled, start = [], 0, 0
    for block in blocks:
        buffer.append(block)
        filled += len(block)
        while filled >= shard:
            data = np.concatenate(buffer)
            array[start : start + shard] = data[:shard]
            start += shard
            buffer, filled = [data[shard:]], filled - shard
    if filled:
        array[start : start + filled] = np.concatenate(buffer)
    if start + filled != frames:
        raise StoreError(f"{spec.array}: wrote {start + filled} frames, expected {frames}")


def _records_table(url: str, n_units: int, n_rows: int, group: str = "") -> pd.DataFrame:
    done = done_units(url, n_units, group)
    if len(done) != n_units:
        raise StoreError(f"{url}: {n_units - len(done)} work units are not done; run the extraction again")
    records = pd.DataFrame([r for unit in range(n_units) for r in done[unit]], columns=list(RECORD_COLUMNS))
    records = records.set_index("row").sort_index()
    if len(records) != n_rows or not (records.index == np.arange(n_rows)).all():
        raise StoreError(f"{url}: the parts' records do not cover the plan's {n_rows} utterances")
    records["n_frames"] = records["n_frames"].fillna(0).astype(np.int64)
    return records


def _offsets(n_frames: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)


def finish_store(url: str, n_units: int, summary_extra: dict | None = None, attrs_extra: dict | None = None,
                 chunk_frames: dict[str, int] | None = None, shard_chunks: int = sf.SHARD_CHUNKS) -> pd.DataFrame:
    """Copy every part into the final arrays and tables; mark the store complete; drop the parts.

    Safe to run again after a kill: the parts stay until the state says "complete". ``chunk_frames``
    (frames per chunk by stream name) and ``shard_chunks`` override the layout (tests use tiny
    chunks to span many). Returns the utterance table.
    """
    files = StoreFiles(url)
    plan = files.read_table(sf.PLAN)
    records = _records_table(url, n_units, len(plan))
    table = plan.copy()
    for column in RECORD_COLUMNS[1:]:
        table[column] = records[column].to_numpy()
    offsets = _offsets(table["n_frames"].to_numpy())
    table["n_frames"] = table["n_frames"].astype(np.int64)
    table["frame_offset"] = offsets[:-1]

    root = zarr.open_group(url, mode="r+")
    attrs = files.read_group_attrs()
    total = int(offsets[-1])
    usage = {}
    for spec in sf.stream_specs(attrs).values():
        chunk = (chunk_frames or {}).get(spec.name)
        blocks = _part_blocks(url, n_units, "", spec.name)
        if sf.CODEBOOKS in spec.tables:  # the codes: count the codewords they use on the way
            usage[spec.name] = CodeUsage(spec.frame_shape[0])
            blocks = usage[spec.name].count(blocks)
        write_concatenated(root, spec, blocks, total, chunk, shard_chunks)
        point("finish:after-stream-array")
    root.create_array(sf.OFFSETS, data=offsets, chunks=offsets.shape, compressors=COMPRESSORS, overwrite=True)

    failed = table[table["status"] != "ok"]
    failures = pd.concat([files.read_table(sf.PROBLEMS), failed[list(sf.FAILURE_COLUMNS)]], ignore_index=True)
    files.write_table(sf.FAILURES, failures)
    point("finish:after-failures-table")
    files.write_table(sf.UTTERANCES, table.drop(columns=["stage", "reason"]))
    ok = table["status"] == "ok"
    summary = {
        "utterances": int(len(table)),
        "ok": int(ok.sum()),
        "failed": int(len(failures)),
        "frames": total,
        "audio_seconds": float(table.loc[ok, "duration"].sum()),
        **({"codebook_usage": usage[sf.CODES].to_dict()} if sf.CODES in usage else {}),
        **(summary_extra or {}),
    }
    point("finish:before-complete")
    files.update_group_attrs({**(attrs_extra or {}), "state": sf.STATE_COMPLETE, "completed": now(), "summary": summary,
                              sf.INTEGRITY: sf.attrs_digest({**attrs, **(attrs_extra or {})})})
    point("finish:after-complete")
    files.remove(sf.PARTS)
    point("finish:after-parts-removed")
    files.remove(sf.PLAN)
    files.remove(sf.PROBLEMS)
    return table


def create_stream(url: str, spec: StreamSpec | list[StreamSpec], attrs: dict, group: str | None = None) -> None:
    """Start adding stream ``spec`` (or several streams sharing one offsets array, e.g. an augmented
    view's codec streams) to the finished store at ``url``: their group (default
    ``streams/NAME``), in state "extracting", with ``attrs`` (config, provenance). Attributes the
    group already holds (an augmented view's record) are kept; nothing else in the store is touched."""
    specs = spec if isinstance(spec, list) else [spec]
    group = group or sf.added_stream_group(specs[0].name)
    files = StoreFiles(url)
    if files.exists(f"{group}/zarr.json"):
        kept = {k: v for k, v in files.read_group_attrs(group).items() if k not in ("stream", "streams", "state", "config")}
        files.remove(f"{group}/{sf.PARTS}")
    else:
        kept = {}
        zarr.open_group(url, mode="r+").create_group(group, overwrite=True)  # whatever a killed creation left
    described = {"stream": specs[0].to_attrs()} if len(specs) == 1 and not isinstance(spec, list) else \
        {"streams": {s.name: s.to_attrs() for s in specs}}
    files.update_group_attrs({**kept, **attrs, **described, "state": sf.STATE_EXTRACTING, "created": now()}, group)


def finish_stream(url: str, name: str, n_units: int, attrs_extra: dict | None = None,
                  chunk: int | None = None, group: str | None = None) -> pd.DataFrame:
    """Copy an added stream group's parts (``group``, default ``streams/NAME``) into its data
    arrays and offsets, record its failures, mark it complete, drop its parts. Safe to run again
    after a kill. Returns its per-utterance records."""
    files = StoreFiles(url)
    group = group or sf.added_stream_group(name)
    attrs = files.read_group_attrs(group)
    specs = sf.group_stream_specs(attrs)
    table = files.read_table(sf.UTTERANCES)
    records = _records_table(url, n_units, len(table), group)
    offsets = _offsets(records["n_frames"].to_numpy())
    root = zarr.open_group(url, mode="r+")
    for spec in specs:
        write_concatenated(root, spec, _part_blocks(url, n_units, group, spec.name), int(offsets[-1]), chunk)
    for path in dict.fromkeys(spec.offsets for spec in specs):
        root.create_array(path, data=offsets, chunks=offsets.shape, compressors=COMPRESSORS, overwrite=True)
    failed = records["status"] != "ok"
    failures = pd.DataFrame({"utt_id": table["utt_id"].to_numpy()[failed.to_numpy()],
                             "path": table["path"].to_numpy()[failed.to_numpy()],
                             "stage": records.loc[failed, "stage"].to_numpy(),
                             "reason": records.loc[failed, "reason"].to_numpy()}, columns=list(sf.FAILURE_COLUMNS))
    files.write_table(f"{group}/{sf.FAILURES}", failures)
    summary = {"utterances": int(len(records)), "ok": int((~failed).sum()), "failed": int(failed.sum()),
               "frames": int(offsets[-1])}
    point("stream:before-complete")
    files.update_group_attrs({**(attrs_extra or {}), "state": sf.STATE_COMPLETE, "completed": now(), "summary": summary},
                             group)
    files.remove(f"{group}/{sf.PARTS}")
    return records

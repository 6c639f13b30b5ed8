"""The feature store writer: create a store, write work-unit parts, and finish it.

See :mod:`extract.storeformat` for the layout. Writers never share a chunk: each work unit has its
own part group, and only :func:`finish_store` (one process) writes the final, sharded arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import zarr

from . import storeformat as sf
from .storeformat import StoreFiles


COMPRESSORS = zarr.codecs.ZstdCodec(level=0, checksum=True)
"""Zstandard with a per-chunk checksum, so that `pipeline verify` detects any corrupted chunk."""


class StoreError(RuntimeError):
    """The store cannot be created, resumed or finished as asked."""


@dataclass
class PartData:
    """What one work unit produced: its records (one per utterance) and its ok utterances' data."""

    unit: int
    records: list[dict]
    codes: list[np.ndarray]  # per ok utterance, [frames, n_q] uint16, in record order
    latent: list[np.ndarray] | None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_store(
    url: str,
    attrs: dict,
    plan: pd.DataFrame,
    problems: pd.DataFrame,
    codebooks: np.ndarray,
    weights: bytes,
) -> None:
    """Lay down a new store in state "extracting": attributes, plan, codebooks and codec weights."""
    files = StoreFiles(url)
    if files.fs.exists(files.root):
        ours = {sf.WEIGHTS, sf.PLAN, sf.PROBLEMS, sf.CODEBOOKS, "zarr.json"}
        foreign = [p for p in files.fs.ls(files.root, detail=False) if p.rstrip("/").rsplit("/", 1)[-1] not in ours]
        if foreign:
            raise StoreError(f"{url} exists and is not a feature store (it holds {foreign[0]}); choose another --out")
    root = zarr.open_group(url, mode="w")  # an unfinished creation is made again from scratch
    files.write_bytes(sf.WEIGHTS, weights)
    files.write_table(sf.PLAN, plan)
    files.write_table(sf.PROBLEMS, problems)
    root.create_array(sf.CODEBOOKS, data=codebooks.astype(np.float32), chunks=codebooks.shape, compressors=COMPRESSORS)
    # attributes last: a store without them is an unfinished creation and is simply made again
    root.attrs.update({**attrs, "format": sf.FORMAT, "format_version": sf.FORMAT_VERSION, "state": sf.STATE_EXTRACTING, "created": now()})


def write_part(url: str, part: PartData) -> None:
    """Write one unit's data, then its records: the records are the unit's commit."""
    group = zarr.open_group(url, mode="r+").require_group(sf.part_name(part.unit))
    if part.codes:
        codes = np.concatenate(part.codes)
        group.create_array(sf.CODES, data=codes, chunks=codes.shape, compressors=COMPRESSORS, overwrite=True)
        if part.latent is not None:
            latent = np.concatenate(part.latent)
            group.create_array(sf.LATENT, data=latent, chunks=latent.shape, compressors=COMPRESSORS, overwrite=True)
    group.attrs["records"] = part.records


def done_units(url: str, n_units: int) -> dict[int, list[dict]]:
    """Records of every committed unit (a unit whose metadata is unreadable counts as not done)."""
    files = StoreFiles(url)
    done = {}
    for unit in range(n_units):
        name = sf.part_name(unit)
        if not files.exists(f"{name}/zarr.json"):
            continue
        try:
            records = files.read_group_attrs(name).get("records")
        except ValueError:  # a torn zarr.json from a kill mid-write
            continue
        if records is not None:
            done[unit] = records
    return done


def _stream_rows(url: str, units: list[int], array: str) -> Iterator[np.ndarray]:
    root = zarr.open_group(url, mode="r")
    for unit in units:
        name = f"{sf.part_name(unit)}/{array}"
        try:
            yield root[name][...]
        except KeyError:
            continue  # a unit whose utterances all failed has no data


def _write_concatenated(root: zarr.Group, name: str, blocks: Iterator[np.ndarray], shape: tuple, dtype, chunk: int) -> None:
    """Write row blocks into a new sharded array, one whole shard at a time (sharded writes must not
    overlap, and whole-shard writes need no read-modify-write)."""
    shard = chunk * sf.SHARD_CHUNKS
    if shape[0] < shard:  # small stores: no sharding, chunks no larger than the data
        chunk = shard = max(1, min(chunk, shape[0]))
        shards = None
    else:
        shards = (shard, shape[1])
    array = root.create_array(name, shape=shape, dtype=dtype, chunks=(chunk, shape[1]), shards=shards, compressors=COMPRESSORS, overwrite=True)
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
    if start + filled != shape[0]:
        raise StoreError(f"{name}: wrote {start + filled} frames, expected {shape[0]}")


def finish_store(url: str, n_units: int, summary_extra: dict | None = None, attrs_extra: dict | None = None) -> pd.DataFrame:
    """Copy every part into the final arrays and tables; mark the store complete; drop the parts.

    Safe to run again after a kill: the parts stay until the state says "complete".
    Returns the utterance table.
    """
    files = StoreFiles(url)
    plan = files.read_table(sf.PLAN)
    done = done_units(url, n_units)
    if len(done) != n_units:
        raise StoreError(f"{url}: {n_units - len(done)} work units are not done; run the extraction again")
    columns = ["row", "status", "n_frames", "n_windows", "sample_rate", "channels", "duration", "stage", "reason"]
    records = pd.DataFrame([r for unit in range(n_units) for r in done[unit]], columns=columns).set_index("row").sort_index()
    if len(records) != len(plan) or not (records.index == np.arange(len(plan))).all():
        raise StoreError(f"{url}: the parts' records do not cover the plan's {len(plan)} utterances")
    table = plan.copy()
    for column in columns[1:]:
        table[column] = records[column].to_numpy()
    table["n_frames"] = table["n_frames"].fillna(0).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(table["n_frames"].to_numpy())]).astype(np.int64)
    table["frame_offset"] = offsets[:-1]

    root = zarr.open_group(url, mode="r+")
    n_q = root[sf.CODEBOOKS].shape[0]
    total = int(offsets[-1])
    units = list(range(n_units))
    _write_concatenated(root, sf.CODES, _stream_rows(url, units, sf.CODES), (total, n_q), "uint16", sf.CODES_CHUNK)
    if root.attrs.get("config", {}).get("latent", False):
        dim = root[sf.CODEBOOKS].shape[2]
        _write_concatenated(root, sf.LATENT, _stream_rows(url, units, sf.LATENT), (total, dim), "float16", sf.LATENT_CHUNK)
    root.create_array(sf.OFFSETS, data=offsets, chunks=offsets.shape, compressors=COMPRESSORS, overwrite=True)

    failed = table[table["status"] != "ok"]
    failures = pd.concat(
        [files.read_table(sf.PROBLEMS), failed[list(sf.FAILURE_COLUMNS)]], ignore_index=True
    )
    files.write_table(sf.FAILURES, failures)
    files.write_table(sf.UTTERANCES, table.drop(columns=["stage", "reason"]))
    ok = table["status"] == "ok"
    summary = {
        "utterances": int(len(table)),
        "ok": int(ok.sum()),
        "failed": int(len(failures)),
        "frames": total,
        "audio_seconds": float(table.loc[ok, "duration"].sum()),
        **(summary_extra or {}),
    }
    root.attrs.update({**(attrs_extra or {}), "state": sf.STATE_COMPLETE, "completed": now(), "summary": summary})
    files.remove(sf.PARTS)
    files.remove(sf.PLAN)
    files.remove(sf.PROBLEMS)
    return table

"""The chunk layout of a store's arrays, and what a damaged chunk means for the utterances.

`pipeline verify` (:mod:`store.verify`) checks every stored object that an array's metadata implies.
This module holds the geometry it needs: where an array's chunks and shards live, read from its
``zarr.json`` (:class:`ChunkLayout`; a shard's index, :func:`shard_index`); looking up and decoding
every chunk of one array (:func:`check_array_chunks`, each damaged one a :class:`Damage`); and mapping
damaged chunks of a stream's array to the utterances whose frames they hold and to the work units
that wrote them (:func:`affected_utterances`, :class:`Affected`, what `verify --repair` re-extracts).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import zarr

from . import format as sf
from .format import StoreFiles

SHARDING = "sharding_indexed"
EMPTY = np.uint64(2**64 - 1)
"""Offset and length of a chunk a shard index marks as absent."""
CHECKSUM_CODECS = ("crc32c",)


@dataclass(frozen=True)
class Damage:
    """A damaged stored object (a chunk, or a shard) of an array: ``rows`` the frame rows of the
    damaged part [start, stop), ``object_rows`` those of the whole stored object (what a repair
    rewrites)."""

    array: str
    key: str
    rows: tuple[int, int]
    object_rows: tuple[int, int]
    problem: str


@dataclass
class Affected:
    """The utterances whose frames a damaged array holds: table rows and ids, their work units, and
    the utterances a repair re-extracts (all those with frames in the damaged stored objects).
    ``repairable``: `verify --repair` can re-extract the stream (the codec's streams; not an SSL
    stream, which is re-added whole instead)."""

    stream: str
    array: str
    damage: list[Damage]
    rows: list[int]
    utt_ids: list[str]
    units: list[int]
    repair_rows: list[int]
    repairable: bool = True

    def lines(self) -> list[str]:
        out = []
        for d in self.damage:
            out.append(f"{d.key} (frames {d.rows[0]}:{d.rows[1]}): {d.problem}")
        ids = ", ".join(self.utt_ids[:8]) + (f" ... ({len(self.utt_ids)} in all)" if len(self.utt_ids) > 8 else "")
        keys = ", ".join(dict.fromkeys(d.key for d in self.damage))
        out.append(f"stream {self.stream!r} ({keys}): {len(self.utt_ids)} utterance(s) affected: {ids or 'none'} "
                   f"(work unit(s) {_ranges(self.units)})")
        return out


def _ranges(values: list[int]) -> str:
    """``0-3, 7, 9-10`` for [0, 1, 2, 3, 7, 9, 10]."""
    out: list[str] = []
    for v in sorted(values):
        if out and int(out[-1].split("-")[-1]) == v - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out) or "none"



# -- chunk layout from the array metadata ---------------------------------------------------------


@dataclass(frozen=True)
class ChunkLayout:
    """Where an array's chunks live, from its zarr.json: the stored keys and the chunks in each."""

    name: str
    shape: tuple[int, ...]
    grid: tuple[int, ...]  # shape of a stored object: a chunk, or a shard when sharded
    inner: tuple[int, ...] | None  # chunk shape inside a shard
    index_at_end: bool
    index_checksum: bool
    encoding: str
    separator: str
    checksummed: bool  # whether a chunk's codecs detect any corruption of its bytes

    @classmethod
    def from_metadata(cls, name: str, meta: dict) -> ChunkLayout:
        if meta.get("chunk_grid", {}).get("name") != "regular":
            raise ValueError(f"chunk grid {meta.get('chunk_grid')!r} is not a regular grid")
        encoding = meta.get("chunk_key_encoding", {"name": "default"})
        kind = encoding.get("name", "default")
        separator = encoding.get("configuration", {}).get("separator", "/" if kind == "default" else ".")
        codecs = meta.get("codecs", [])
        shard = next((c for c in codecs if c.get("name") == SHARDING), None)
        inner_codecs = shard["configuration"].get("codecs", []) if shard else codecs
        config = shard["configuration"] if shard else {}
        return cls(
            name=name,
            shape=tuple(meta["shape"]),
            grid=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            inner=tuple(config["chunk_shape"]) if shard else None,
            index_at_end=config.get("index_location", "end") == "end",
            index_checksum=any(c.get("name") in CHECKSUM_CODECS for c in config.get("index_codecs", [])),
            encoding=kind,
            separator=separator,
            checksummed=any(
                c.get("name") in CHECKSUM_CODECS or (c.get("name") == "zstd" and c.get("configuration", {}).get("checksum"))
                for c in inner_codecs
            ),
        )

    def key(self, index: tuple[int, ...]) -> str:
        """The stored object's key relative to the array, e.g. ``c/3/0``."""
        parts = [str(i) for i in index]
        if self.encoding == "v2":
            return self.separator.join(parts) if parts else "0"
        return self.separator.join(["c", *parts])

    def stored(self) -> Iterator[tuple[tuple[int, ...], str]]:
        """(grid index, key) of every chunk or shard the shape implies."""
        counts = [math.ceil(s / g) for s, g in zip(self.shape, self.grid)]
        for index in itertools.product(*(range(c) for c in counts)):
            yield index, self.key(index)

    def chunks_in(self, index: tuple[int, ...]) -> list[tuple[int, tuple[slice, ...]]]:
        """(position in the shard index, region) of each chunk of a stored object inside the shape.

        Unsharded, that is the one chunk at position 0."""
        start = [i * g for i, g in zip(index, self.grid)]
        inner = self.inner or self.grid
        per = [g // c for g, c in zip(self.grid, inner)]
        out = []
        for position, sub in enumerate(itertools.product(*(range(p) for p in per))):
            lo = [s + k * c for s, k, c in zip(start, sub, inner)]
            if all(a < n for a, n in zip(lo, self.shape)):
                out.append((position, tuple(slice(a, min(a + c, n)) for a, c, n in zip(lo, inner, self.shape))))
        return out

    @property
    def chunks_per_shard(self) -> int:
        return math.prod(g // c for g, c in zip(self.grid, self.inner)) if self.inner else 1


def _region(region: tuple[slice, ...]) -> str:
    return ", ".join(f"{s.start}:{s.stop}" for s in region)


def shard_index(files: StoreFiles, path: str, layout: ChunkLayout) -> tuple[np.ndarray | None, str | None]:
    """The (offset, nbytes) pairs of a shard's index, or a problem when the file cannot hold them."""
    n = layout.chunks_per_shard
    index_size = 16 * n + (4 if layout.index_checksum else 0)
    size = files.fs.size(path)
    if size < index_size:
        return None, f"{size} bytes, too short to hold its shard index of {index_size} bytes (truncated?)"
    with files.fs.open(path, "rb") as f:
        f.seek(size - index_size if layout.index_at_end else 0)
        raw = f.read(16 * n)
    entries = np.frombuffer(raw, dtype="<u8").reshape(n, 2)
    data_end = size - index_size if layout.index_at_end else size
    present = entries[:, 0] != EMPTY
    if np.any(entries[present, 0] + entries[present, 1] > data_end):
        return None, f"its shard index points beyond the file's {size} bytes (truncated or corrupted)"
    return entries, None


def _value_problem(name: str, data: np.ndarray, codebook_size: int, codes: tuple[str, ...]) -> str | None:
    if name in codes:
        bad = int(np.count_nonzero(data >= codebook_size))
        return f"{bad} codes >= codebook size {codebook_size} (max {int(data.max())})" if bad else None
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        return f"{bad} values not finite" if bad else None
    return None


def _rows(region: tuple[slice, ...]) -> tuple[int, int]:
    return (region[0].start, region[0].stop) if region else (0, 1)


def check_array_chunks(files: StoreFiles, root: zarr.Group, name: str, codebook_size: int, codes: tuple[str, ...],
                       chunks: list[str], values: list[str], damage: list[Damage] | None = None,
                       decode: bool = True) -> bool:
    """Look up, decode and check every chunk of one array: a chunk missing or not decodable adds a
    line to ``chunks``, one with bad values (codes of the arrays ``codes`` >= ``codebook_size``, floats not
    finite) to ``values``, and each damaged one is also added to ``damage``. ``decode=False`` only
    looks them up (and reads shard indexes). Returns whether its chunks carry checksums."""
    layout = ChunkLayout.from_metadata(name, json.loads(files.read_bytes(f"{name}/zarr.json")))
    array = root[name]
    base = files.path(name)
    existing = {p[len(base) + 1 :] for p in files.fs.find(base)}
    damage = damage if damage is not None else []
    for index, key in layout.stored():
        where = f"{name}/{key}"
        whole = layout.chunks_in(index)
        object_rows = (_rows(whole[0][1])[0], _rows(whole[-1][1])[1]) if whole else (0, 0)
        if key not in existing:
            problem = f"missing (Zarr would read it as fill value {array.fill_value})"
            chunks.append(f"{where}: {problem}")
            damage.append(Damage(name, where, object_rows, object_rows, problem))
            continue
        entries = None
        if layout.inner:
            entries, problem = shard_index(files, f"{base}/{key}", layout)
            if problem:
                chunks.append(f"{where}: {problem}")
                damage.append(Damage(name, where, object_rows, object_rows, problem))
                continue
        for position, region in whole:
            label = f"{where} (chunk {position} of the shard, rows {_region(region)})" if layout.inner else f"{where} (rows {_region(region)})"
            if entries is not None and entries[position, 0] == EMPTY:
                problem = f"missing from the shard (Zarr would read it as fill value {array.fill_value})"
                chunks.append(f"{label}: {problem}")
                damage.append(Damage(name, where, _rows(region), object_rows, f"chunk {position} {problem}"))
                continue
            if not decode:
                continue
            try:
                data = array[region]
            except Exception as err:  # codecs raise many types for corrupt bytes  # noqa: BLE001
                problem = f"cannot be decoded ({type(err).__name__}: {err})"
                chunks.append(f"{label}: {problem}")
                damage.append(Damage(name, where, _rows(region), object_rows, problem))
                continue
            problem = _value_problem(name, data, codebook_size, codes)
            if problem:
                values.append(f"{label}: {problem}")
                damage.append(Damage(name, where, _rows(region), object_rows, problem))
    return layout.checksummed


def unit_size(files: StoreFiles, attrs: dict, spec: sf.StreamSpec) -> int | None:
    """Utterances per work unit of the extraction that wrote stream ``spec``."""
    group = sf.group_of(spec)
    if group:  # a stream added later, or an augmented view's
        return files.read_group_attrs(group).get("config", {}).get("unit_size")
    return attrs.get("config", {}).get("unit_size")


def affected_utterances(files: StoreFiles, root: zarr.Group, attrs: dict, specs: dict[str, sf.StreamSpec],
                        table: pd.DataFrame, damage: list[Damage]) -> list[Affected]:
    """Map damaged chunks of the streams' arrays to utterances and work units, per array."""
    by_array = {spec.array: spec for spec in specs.values()}
    out = []
    for array in dict.fromkeys(d.array for d in damage):
        spec = by_array.get(array)
        if spec is None:
            continue
        offsets = root[spec.offsets][...]
        items = [d for d in damage if d.array == array]
        rows: set[int] = set()
        repair: set[int] = set()
        for d in items:
            for target, (lo, hi) in ((rows, d.rows), (repair, d.object_rows)):
                first = int(np.searchsorted(offsets, lo, side="right")) - 1
                last = int(np.searchsorted(offsets, hi, side="left"))
                target.update(r for r in range(max(first, 0), min(last, len(offsets) - 1))
                              if offsets[r + 1] > offsets[r] and offsets[r] < hi and offsets[r + 1] > lo)
        size = unit_size(files, attrs, spec) or 1
        ordered = sorted(rows)
        out.append(Affected(spec.name, array, items, ordered, table["utt_id"].astype(str).to_numpy()[ordered].tolist(),
                            sorted({r // size for r in repair}), sorted(repair),
                            (spec.source or {}).get("kind") != "ssl"))
    return out

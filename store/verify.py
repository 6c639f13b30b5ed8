"""`pipeline verify`: check a finished feature store's integrity, down to every stored chunk.

Each check reports what it looked at and a list of problems, one line each, naming the file, the
array and chunk (or shard) key concerned. The checks:

* ``format``: the store's format, version and state;
* ``tables``: utterances.parquet and failures.parquet are readable and have their columns;
* ``offsets``: each stream's offsets start 0, never decrease, are one more than the utterances, end
  at the stream's last frame; the store's own ``offsets`` agree with the table's ``n_frames`` and
  ``frame_offset``;
* ``utterances``: every utterance is done (status "ok", or "failed" with a reason in
  failures.parquet), ids are unique, the recorded summary agrees;
* ``arrays``: codebooks, every stream's data and offsets have the shapes and types the stream specs
  (and the codec attributes) imply; a stream still being added is reported;
* ``weights``: the weights file's sha256 is the one in the attributes, and its codebooks are the
  store's;
* ``chunks``: every chunk (or shard, and every chunk inside a shard) that the array metadata implies
  exists and decodes. Zarr reads a missing chunk as the fill value without a word, so the expected
  keys are enumerated from the metadata and looked up;
* ``values``: codes are below the codebook size, floats are finite (checked chunk by chunk).

A chunk compressed without a checksum (Zarr's default zstd) can be corrupted in a way that still
decodes; the ``chunks`` line says when that is so.

Every damaged chunk of a stream's array is mapped to the utterances whose frames it holds (through
the stream's offsets) and to their work units (:class:`Affected`); the report ends with the command
that re-extracts just those (`pipeline verify --repair`, see `extract.repair`). The ``format`` check
also compares the content-defining attributes with the sha256 recorded when the store was finished
(an edited ``zarr.json``).

:func:`quick_check` runs the same checks without decoding the chunks (attributes, tables, shapes,
offsets, commit records, which chunks and shard entries exist): seconds on any store. `train`,
`evaluate` and `score` run it first (`store.reader.FeatureStore(..., check=True)`), and the reader
turns a chunk that fails to decode later, when it is read, into the same message.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import zarr
from fsspec.implementations.local import LocalFileSystem

from . import format as sf
from .format import StoreFiles

SHARDING = "sharding_indexed"
EMPTY = np.uint64(2**64 - 1)
"""Offset and length of a chunk a shard index marks as absent."""
CHECKSUM_CODECS = ("crc32c",)

UTTERANCE_COLUMNS = ("utt_id", "split", "label", "status", "duration", "n_frames", "frame_offset")


@dataclass
class Check:
    """One check: what it looked at (``detail``) and what it found wrong (one line per problem)."""

    name: str
    detail: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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


@dataclass
class VerifyReport:
    store: str
    checks: list[Check]
    damage: list[Damage] = field(default_factory=list)
    affected: list[Affected] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def repair_hint(self) -> str | None:
        """How to repair the damage found, or None when there is none (or when the store is only
        unfinished: its problem line says to run the extraction again)."""
        if self.ok or all("`pipeline extract` again" in p for p in self.problems):
            return None
        damaged_only = self.affected and all(c.name in ("chunks", "values") for c in self.checks if not c.ok)
        if damaged_only and not all(a.repairable for a in self.affected):
            names = sorted({a.stream for a in self.affected if not a.repairable})
            return (f"repair: stream(s) {', '.join(names)} (SSL features) are not re-extracted in place: remove "
                    f"{', '.join(f'{self.store}/{sf.added_stream_group(n)}' for n in names)} and run the same "
                    "`pipeline extract --ssl ...` again, which adds the stream anew and touches nothing else")
        if damaged_only:
            n = len({r for a in self.affected for r in a.repair_rows})
            return (f"repair: `pipeline verify --repair {self.store}` re-extracts the {n} utterance(s) whose frames "
                    "the damaged chunks hold, from their audio, into the store (the codec weights are in the store)")
        return ("repair: this damage cannot be repaired in place; re-extract into a new store (`pipeline extract` "
                f"with --weights {self.store}/{sf.WEIGHTS} gives the same codec), or restore the store from a copy")

    def summary(self) -> str:
        """The problems, the utterances affected and the repair, as one message (what `train`,
        `evaluate` and `score` print when they refuse a damaged store)."""
        lines = [f"{self.store} is damaged:"] + [f"  {p}" for p in self.problems[:12]]
        if len(self.problems) > 12:
            lines.append(f"  ... and {len(self.problems) - 12} more (`pipeline verify {self.store}`)")
        lines += [f"  {line}" for a in self.affected for line in a.lines()[-1:]]
        hint = self.repair_hint()
        return "\n".join(lines + ([hint] if hint else []))

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {p}" for c in self.checks for p in c.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "problems": c.problems} for c in self.checks],
            "affected": [{"stream": a.stream, "array": a.array, "utt_ids": a.utt_ids, "rows": a.rows, "units": a.units,
                          "chunks": [d.key for d in a.damage]} for a in self.affected],
            "repair": self.repair_hint(),
        }

    def format(self) -> str:
        lines = [f"verify {self.store}"]
        for c in self.checks:
            lines.append(f"  ok    {c.name:<10}  {c.detail}" if c.ok else f"  FAIL  {c.name:<10}  {c.detail}")
            lines += [f"  FAIL  {c.name}: {p}" for p in c.problems]
        for a in self.affected:
            lines += [f"  affected: {line}" for line in a.lines()[-1:]]
        n = len(self.problems)
        lines.append("OK: every check passed" if self.ok else f"{n} problem{'s' if n != 1 else ''} found")
        hint = self.repair_hint()
        if hint:
            lines.append(hint)
        return "\n".join(lines)


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


def _shard_index(files: StoreFiles, path: str, layout: ChunkLayout) -> tuple[np.ndarray | None, str | None]:
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


def _value_problem(name: str, data: np.ndarray, codebook_size: int, codes: str | None) -> str | None:
    if name == codes:
        bad = int(np.count_nonzero(data >= codebook_size))
        return f"{bad} codes >= codebook size {codebook_size} (max {int(data.max())})" if bad else None
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        return f"{bad} values not finite" if bad else None
    return None


def _rows(region: tuple[slice, ...]) -> tuple[int, int]:
    return (region[0].start, region[0].stop) if region else (0, 1)


def _check_array_chunks(files: StoreFiles, root: zarr.Group, name: str, codebook_size: int, codes: str | None,
                        chunks: Check, values: Check, damage: list[Damage] | None = None, decode: bool = True) -> bool:
    """Look up, decode and check every chunk of one array; each damaged one is also added to
    ``damage``. ``decode=False`` only looks them up (and reads shard indexes). Returns whether its
    chunks carry checksums."""
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
            chunks.problems.append(f"{where}: {problem}")
            damage.append(Damage(name, where, object_rows, object_rows, problem))
            continue
        entries = None
        if layout.inner:
            entries, problem = _shard_index(files, f"{base}/{key}", layout)
            if problem:
                chunks.problems.append(f"{where}: {problem}")
                damage.append(Damage(name, where, object_rows, object_rows, problem))
                continue
        for position, region in whole:
            label = f"{where} (chunk {position} of the shard, rows {_region(region)})" if layout.inner else f"{where} (rows {_region(region)})"
            if entries is not None and entries[position, 0] == EMPTY:
                problem = f"missing from the shard (Zarr would read it as fill value {array.fill_value})"
                chunks.problems.append(f"{label}: {problem}")
                damage.append(Damage(name, where, _rows(region), object_rows, f"chunk {position} {problem}"))
                continue
            if not decode:
                continue
            try:
                data = array[region]
            except Exception as err:  # codecs raise many types for corrupt bytes  # noqa: BLE001
                problem = f"cannot be decoded ({type(err).__name__}: {err})"
                chunks.problems.append(f"{label}: {problem}")
                damage.append(Damage(name, where, _rows(region), object_rows, problem))
                continue
            problem = _value_problem(name, data, codebook_size, codes)
            if problem:
                values.problems.append(f"{label}: {problem}")
                damage.append(Damage(name, where, _rows(region), object_rows, problem))
    return layout.checksummed


# -- the checks -----------------------------------------------------------------------------------


def _check_tables(files: StoreFiles, check: Check) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    tables = []
    for name, columns in ((sf.UTTERANCES, UTTERANCE_COLUMNS), (sf.FAILURES, sf.FAILURE_COLUMNS)):
        try:
            table = files.read_table(name)
        except FileNotFoundError:
            check.problems.append(f"{name}: missing")
            tables.append(None)
            continue
        except Exception as err:  # pyarrow raises several types for damaged files  # noqa: BLE001
            check.problems.append(f"{name}: not readable ({type(err).__name__}: {err})")
            tables.append(None)
            continue
        lacking = [c for c in columns if c not in table]
        if lacking:
            check.problems.append(f"{name}: lacks the columns {', '.join(lacking)}")
            table = None
        tables.append(table)
    table, failures = tables
    check.detail = f"{len(table) if table is not None else '?'} utterances, {len(failures) if failures is not None else '?'} failures"
    return table, failures


def _check_offsets(name: str, offsets: np.ndarray, n_utts: int, n_frames: int | None, check: Check) -> np.ndarray:
    """Problems of one offsets array [n_utts + 1] against its stream's frame count; returns its steps."""
    if len(offsets) != n_utts + 1:
        check.problems.append(f"{name}: {len(offsets)} values for {n_utts} utterances (expected {n_utts + 1})")
    if len(offsets) and offsets[0] != 0:
        check.problems.append(f"{name}: starts at {offsets[0]}, not 0")
    steps = np.diff(offsets)
    if np.any(steps < 0):
        i = int(np.argmax(steps < 0))
        check.problems.append(f"{name}: not monotonic: [{i + 1}] = {offsets[i + 1]} < [{i}] = {offsets[i]} ({int(np.count_nonzero(steps < 0))} decrease(s))")
    if n_frames is not None and len(offsets) and offsets[-1] != n_frames:
        check.problems.append(f"{name}: ends at {offsets[-1]}, but its stream has {n_frames} frames")
    return steps


def _check_table_offsets(offsets: np.ndarray, steps: np.ndarray, table: pd.DataFrame, check: Check) -> None:
    """The utterance table's n_frames and frame_offset against the store's own offsets."""
    if len(offsets) != len(table) + 1:
        return
    for column, expected in (("n_frames", steps), ("frame_offset", offsets[:-1])):
        differ = np.flatnonzero(table[column].to_numpy() != expected)
        if len(differ):
            row = int(differ[0])
            check.problems.append(
                f"{sf.UTTERANCES}: {column} disagrees with {sf.OFFSETS} for {len(differ)} utterances, first {table['utt_id'].iloc[row]} "
                f"(row {row}: {table[column].iloc[row]} vs {expected[row]})"
            )


def _check_utterances(table: pd.DataFrame, failures: pd.DataFrame, summary: dict, check: Check) -> None:
    status = table["status"]
    ok = status == "ok"
    failed = status == "failed"
    check.detail = f"{int(ok.sum())} ok, {int(failed.sum())} failed, {len(failures)} in {sf.FAILURES}"
    other = table[~ok & ~failed]
    if len(other):
        check.problems.append(f"{len(other)} utterances not done (status {sorted(other['status'].astype(str).unique())}), first {other['utt_id'].iloc[0]}")
    duplicated = table["utt_id"][table["utt_id"].duplicated()]
    if len(duplicated):
        check.problems.append(f"{len(duplicated)} duplicated utterance ids, first {duplicated.iloc[0]}")
    reasons = failures.dropna(subset=["utt_id"]).drop_duplicates("utt_id").set_index("utt_id")["reason"]
    for utt in table.loc[failed, "utt_id"]:
        if utt not in reasons.index:
            check.problems.append(f"{utt}: failed, but not in {sf.FAILURES}")
        elif not isinstance(reasons[utt], str) or not reasons[utt].strip():
            check.problems.append(f"{utt}: failed without a reason in {sf.FAILURES}")
    listed_ok = sorted(set(reasons.index) & set(table.loc[ok, "utt_id"]))
    if listed_ok:
        check.problems.append(f"{len(listed_ok)} utterances are ok but listed in {sf.FAILURES}, first {listed_ok[0]}")
    with_frames = table.loc[failed & (table["n_frames"] != 0), "utt_id"]
    if len(with_frames):
        check.problems.append(f"{len(with_frames)} failed utterances have frames, first {with_frames.iloc[0]}")
    expected = {
        "utterances": len(table),
        "ok": int(ok.sum()),
        "failed": len(failures),
        "frames": int(table.loc[ok, "n_frames"].sum()),
    }
    for key, value in expected.items():
        if key in summary and summary[key] != value:
            check.problems.append(f"zarr.json summary says {key} {summary[key]}, the tables give {value}")
    seconds = float(table.loc[ok, "duration"].sum())
    if "audio_seconds" in summary and not math.isclose(summary["audio_seconds"], seconds, rel_tol=1e-6, abs_tol=1e-6):
        check.problems.append(f"zarr.json summary says audio_seconds {summary['audio_seconds']}, the table gives {seconds}")


def expected_arrays(attrs: dict, specs: dict[str, sf.StreamSpec], n_utts: int | None) -> dict[str, tuple[str, tuple]]:
    """array path -> (dtype, shape) implied by the attributes: None in a shape is a stream's frame count."""
    codec = attrs.get("codec", {})
    expected: dict[str, tuple[str, tuple]] = {}
    if sf.CODES in specs:
        expected[sf.CODEBOOKS] = ("float32", (codec.get("n_q"), codec.get("codebook_size"), codec.get("dim")))
    for spec in specs.values():
        expected[spec.array] = (spec.dtype, (None, *spec.frame_shape))
        expected[spec.offsets] = ("int64", (None if n_utts is None else n_utts + 1,))
    return expected


def _check_arrays(files: StoreFiles, root: zarr.Group, expected: dict[str, tuple[str, tuple]], check: Check) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, (dtype, shape) in expected.items():
        if not files.exists(f"{name}/zarr.json"):
            check.problems.append(f"{name}: missing")
            continue
        try:
            array = root[name]
        except Exception as err:  # a damaged zarr.json  # noqa: BLE001
            check.problems.append(f"{name}/zarr.json: not readable ({type(err).__name__}: {err})")
            continue
        shapes[name] = tuple(array.shape)
        if str(array.dtype) != dtype:
            check.problems.append(f"{name}: dtype {array.dtype}, expected {dtype}")
        if len(array.shape) != len(shape) or any(e is not None and e != s for e, s in zip(shape, array.shape)):
            shown = "x".join("frames" if e is None else str(e) for e in shape)
            check.problems.append(f"{name}: shape {list(array.shape)}, expected [{shown}]")
    check.detail = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
    return shapes


def _check_streams(files: StoreFiles, root: zarr.Group, specs: dict[str, sf.StreamSpec], shapes: dict, table: pd.DataFrame,
                   check: Check) -> None:
    """Every stream's offsets; the store's own offsets against the table; added streams cover the
    table's ok utterances (or list them in their failures)."""
    frames_of = {spec.offsets: shapes.get(spec.array, (None,))[0] for spec in specs.values()}
    for path in dict.fromkeys(spec.offsets for spec in specs.values()):
        if path not in shapes:
            check.problems.append(f"not checked: {path} unreadable")
            continue
        offsets = root[path][...]
        steps = _check_offsets(path, offsets, len(table), frames_of[path], check)
        if path == sf.OFFSETS:
            _check_table_offsets(offsets, steps, table, check)
        elif len(steps) == len(table):
            name = path.split("/")[-2]
            failures = files.read_table(f"{sf.added_stream_group(name)}/{sf.FAILURES}")
            missing = table.loc[(table["status"] == "ok").to_numpy() & (steps == 0), "utt_id"]
            missing = missing[~missing.isin(failures["utt_id"])]
            if len(missing):
                check.problems.append(f"stream {name!r}: {len(missing)} ok utterances have no frames and no failure "
                                      f"record, first {missing.iloc[0]}")
    check.detail = ", ".join(f"{n}: {shapes[n][0]} values" for n in dict.fromkeys(s.offsets for s in specs.values())
                             if n in shapes)


def _sha256(files: StoreFiles, name: str) -> str:
    digest = hashlib.sha256()
    with files.fs.open(files.path(name), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_state(files: StoreFiles, name: str) -> dict:
    """The weights file's state dict (memory-mapped when local: only the codebooks are read)."""
    import torch  # the only part of the store package that needs it  # noqa: PLC0415

    if isinstance(files.fs, LocalFileSystem):
        return torch.load(files.path(name), map_location="cpu", weights_only=True, mmap=True)
    return torch.load(io.BytesIO(files.read_bytes(name)), map_location="cpu", weights_only=True)


def _check_weights(files: StoreFiles, attrs: dict, root: zarr.Group, check: Check) -> None:
    name = attrs.get("weights", {}).get("file", sf.WEIGHTS)
    expected = attrs.get("weights", {}).get("sha256")
    check.detail = f"{name}, sha256 {str(expected)[:12]}"
    if not files.exists(name):
        check.problems.append(f"{name}: missing")
        return
    actual = _sha256(files, name)
    if actual != expected:
        check.problems.append(f"{name}: sha256 {actual[:12]}... differs from the attributes' {str(expected)[:12]}... (file altered or replaced)")
        return
    try:
        state = _load_state(files, name)
        codebooks = root[sf.CODEBOOKS][...]
    except Exception as err:  # a damaged file or array  # noqa: BLE001
        check.problems.append(f"{name}: cannot compare with {sf.CODEBOOKS} ({type(err).__name__}: {err})")
        return
    keys = [f"quantizer.vq.layers.{q}._codebook.embed" for q in range(codebooks.shape[0])]
    differ = [q for q, key in enumerate(keys) if key not in state or not np.array_equal(state[key].numpy(), codebooks[q])]
    if differ:
        check.problems.append(f"{sf.CODEBOOKS} differ from {name}'s quantizer codebooks at levels {', '.join(map(str, differ))}")


def _check_integrity(attrs: dict, check: Check) -> None:
    """The content-defining attributes against the sha256 recorded when the store was finished."""
    recorded = attrs.get(sf.INTEGRITY)
    if recorded is None:
        return  # a store finished before the digest was recorded
    actual = sf.attrs_digest(attrs)
    if actual != recorded:
        check.problems.append(f"zarr.json: the attributes that define the store's content ({', '.join(sf.DIGESTED)}) were "
                              f"edited after extraction (sha256 {actual[:12]}..., recorded {str(recorded)[:12]}...)")


def _check_format(files: StoreFiles, check: Check, pending_streams_ok: bool = False) -> dict | None:
    if not files.exists():
        check.problems.append("zarr.json: missing (no feature store here)")
        return None
    try:
        attrs = files.read_group_attrs()
    except ValueError as err:
        check.problems.append(f"zarr.json: not readable ({err})")
        return None
    check.detail = f"{attrs.get('format')} v{attrs.get('format_version')}, state {attrs.get('state')}"
    if attrs.get("format") != sf.FORMAT:
        check.problems.append(f"zarr.json: format {attrs.get('format')!r}, not {sf.FORMAT!r}")
    elif attrs.get("format_version", 0) > sf.FORMAT_VERSION:
        check.problems.append(f"zarr.json: format version {attrs.get('format_version')} is newer than this tool's {sf.FORMAT_VERSION}")
    elif attrs.get("state") != sf.STATE_COMPLETE:
        check.problems.append(f"zarr.json: extraction not finished (state {attrs.get('state')!r}); run `pipeline extract` again to resume it")
    else:
        _check_integrity(attrs, check)
    for name in files.list(sf.STREAMS):
        group = sf.added_stream_group(name)
        if files.exists(f"{group}/zarr.json") and files.read_group_attrs(group).get("state") != sf.STATE_COMPLETE \
                and not pending_streams_ok:
            check.problems.append(f"{group}: stream {name!r} is still being added; run the same `pipeline extract` again")
    return None if check.problems else attrs


def _specs(files: StoreFiles, attrs: dict) -> dict[str, sf.StreamSpec]:
    present = {name for name in (sf.LATENT,) if files.exists(f"{name}/zarr.json")}
    specs = sf.stream_specs(attrs, present)
    for name in files.list(sf.STREAMS):
        group = sf.added_stream_group(name)
        if files.exists(f"{group}/zarr.json"):
            stream_attrs = files.read_group_attrs(group)
            if stream_attrs.get("state") == sf.STATE_COMPLETE:
                specs[name] = sf.StreamSpec.from_attrs(stream_attrs["stream"])
    return specs


def unit_size(files: StoreFiles, attrs: dict, spec: sf.StreamSpec) -> int | None:
    """Utterances per work unit of the extraction that wrote stream ``spec``."""
    if spec.array.startswith(sf.STREAMS + "/"):
        group = spec.array.rsplit("/", 1)[0]
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


def _guarded(check: Check, run: Callable[[], Any]) -> Any:
    """Run one check; an unexpected error becomes one of its problems instead of a crash."""
    try:
        return run()
    except Exception as err:  # report, never crash, on a damaged store  # noqa: BLE001
        check.problems.append(f"could not be completed ({type(err).__name__}: {err})")
        return None


def verify_store(url: str, decode: bool = True, pending_streams_ok: bool = False) -> VerifyReport:
    """Run every check on the store at ``url`` (a path or fsspec URL); never raises for a damaged store.

    ``decode=False`` looks chunks up without decoding them (see :func:`quick_check`);
    ``pending_streams_ok``: a stream still being added is not a problem (it is not read)."""
    files = StoreFiles(url)
    fmt = Check("format")
    report = VerifyReport(files.url, [fmt])
    attrs = _check_format(files, fmt, pending_streams_ok)
    if attrs is None:
        return report
    tables, offsets_check, utts, arrays, weights, chunks, values = (
        Check(n) for n in ("tables", "offsets", "utterances", "arrays", "weights", "chunks", "values")
    )
    report.checks += [tables, offsets_check, utts, arrays, weights, chunks, values]
    root = zarr.open_group(files.url, mode="r")
    table, failures = _check_tables(files, tables)
    specs = _guarded(arrays, lambda: _specs(files, attrs)) or {}
    expected = expected_arrays(attrs, specs, None if table is None else len(table))
    shapes = _guarded(arrays, lambda: _check_arrays(files, root, expected, arrays)) or {}
    if table is not None:
        _guarded(offsets_check, lambda: _check_streams(files, root, specs, shapes, table, offsets_check))
    else:
        offsets_check.problems.append(f"not checked: {sf.UTTERANCES} unreadable")
    if table is not None and failures is not None:
        _guarded(utts, lambda: _check_utterances(table, failures, attrs.get("summary", {}), utts))
    else:
        utts.problems.append(f"not checked: {sf.UTTERANCES} or {sf.FAILURES} unreadable")
    if sf.CODES in specs and decode:
        _guarded(weights, lambda: _check_weights(files, attrs, root, weights))
    elif not decode:
        weights.detail = "not checked (quick check)"
    size = attrs.get("codec", {}).get("codebook_size", 2**16)
    codes = specs[sf.CODES].array if sf.CODES in specs else None
    unguarded = [n for n in shapes if _guarded(chunks, lambda n=n: _check_array_chunks(
        files, root, n, size, codes, chunks, values, report.damage, decode)) is False]
    chunks.detail = f"every chunk of {', '.join(shapes)} present{' and decodable' if decode else ' (not decoded)'}"
    if unguarded and decode:
        chunks.detail += f" (no chunk checksums in {', '.join(unguarded)}: a corruption there that still decodes goes unseen)"
    floats = [n for n in shapes if root[n].dtype.kind == "f"]
    values.detail = f"codes < {size}; {', '.join(floats) or 'no float arrays'} finite" if decode else "not checked (quick check)"
    if report.damage and table is not None and offsets_check.ok:
        report.affected = _guarded(chunks, lambda: affected_utterances(files, root, attrs, specs, table, report.damage)) or []
    return report


def quick_check(url: str) -> VerifyReport:
    """The checks that need no chunk decoded: attributes (format, state, the recorded sha256), tables
    and their columns, array shapes and types, offsets, every utterance done and the summary, which
    chunks and shard entries exist. What `train`, `evaluate` and `score` run before they start."""
    return verify_store(url, decode=False, pending_streams_ok=True)

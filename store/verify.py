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
  store's (read from the file by the codec's own reader, which the extraction's codec back-end
  registers, :func:`register_codebook_reader`: this package never loads a framework's weights);
* ``chunks``: every chunk (or shard, and every chunk inside a shard) that the array metadata implies
  exists and decodes. Zarr reads a missing chunk as the fill value without a word, so the expected
  keys are enumerated from the metadata and looked up (the chunk layout: :mod:`store.chunks`);
* ``values``: codes are below the codebook size, floats are finite (checked chunk by chunk).

A chunk compressed without a checksum (Zarr's default zstd) can be corrupted in a way that still
decodes; the ``chunks`` line says when that is so.

Every damaged chunk of a stream's array is mapped to the utterances whose frames it holds (through
the stream's offsets) and to their work units (`store.chunks.Affected`); the report ends with the command
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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import zarr

from . import format as sf
from .chunks import Affected, ChunkLayout, Damage, affected_utterances, check_array_chunks, unit_size
from .format import StoreFiles
from .views import VIEWS, all_view_specs, pending_views

__all__ = ["Affected", "Check", "ChunkLayout", "Damage", "VerifyReport", "quick_check", "unit_size", "verify_store"]

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
            groups = sorted({a.array.rsplit("/", 1)[0] for a in self.affected if not a.repairable})  # a view's too
            return (f"repair: stream(s) {', '.join(names)} (SSL features) are not re-extracted in place: remove "
                    f"{', '.join(f'{self.store}/{g}' for g in groups)} and run the same "
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
            group = path.rsplit("/", 1)[0]  # an added stream's group, or an augmented view's
            name = group.removeprefix(f"{sf.STREAMS}/")
            failures = files.read_table(f"{group}/{sf.FAILURES}")
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


CodebookReader = Callable[[StoreFiles, str, int], list]
"""Reads the first ``n_q`` codebooks out of a store's weights file (``StoreFiles``, file name,
``n_q``): one [K, D] array per level, None for a level the file lacks; raises for a file it cannot
read."""
CODEBOOK_READERS: dict[str, CodebookReader] = {}
"""The codebook reader of each codec (by the ``name`` in a store's ``codec`` attributes). The
extraction's codec back-end registers its own (`extract.codec`), so that this package never needs
the codec's framework; a store whose codec has none registered gets its weights' sha256 checked only."""


def register_codebook_reader(codec: str, reader: CodebookReader) -> None:
    """Let `verify` compare the codebooks of stores made by ``codec`` with their weights file."""
    CODEBOOK_READERS[codec] = reader


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
    codec = attrs.get("codec", {}).get("name")
    reader = CODEBOOK_READERS.get(codec)
    if reader is None:
        check.detail += f" (codebooks not compared: no reader of {codec!r} weights registered)"
        return
    try:
        codebooks = root[sf.CODEBOOKS][...]
        saved = reader(files, name, codebooks.shape[0])
    except Exception as err:  # a damaged file or array  # noqa: BLE001
        check.problems.append(f"{name}: cannot compare with {sf.CODEBOOKS} ({type(err).__name__}: {err})")
        return
    differ = [q for q in range(codebooks.shape[0]) if saved[q] is None or not np.array_equal(saved[q], codebooks[q])]
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
    try:
        unfinished = [] if pending_streams_ok else pending_views(files)
    except ValueError as err:  # a torn zarr.json of a view
        unfinished = [f"(unreadable: {err})"]
    for view in unfinished:
        check.problems.append(f"{VIEWS}/: view {view} is still being extracted; run the same `pipeline extract --views "
                              "...` again")
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
    return {**specs, **all_view_specs(files)}  # augmented views' streams, keyed views/NAME/STREAM



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
    codes = tuple(spec.array for spec in specs.values() if spec.name == sf.CODES)  # the store's and its views'
    unguarded = [n for n in shapes if _guarded(chunks, lambda n=n: check_array_chunks(
        files, root, n, size, codes, chunks.problems, values.problems, report.damage, decode)) is False]
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

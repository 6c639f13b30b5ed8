"""`pipeline verify --repair`: re-extract just the utterances whose frames damaged chunks hold, and
rewrite those chunks in place.

`pipeline verify` maps every damaged chunk (or shard) of a stream's array to the utterances whose
frames it holds and to their work units (`store.verify.Affected`). A stream's final array is sharded
and contiguous, so a repair rewrites each damaged stored object whole: it re-runs every work unit that
has frames in it, exactly as the extraction ran it (same codec weights, read from the store; same
unit, hence the same encoder batches; the settings recorded in the store's config; planned and run by
the extraction driver, `extract.driver`), into a scratch group ``repair/`` of the store, then:

1. checks the re-extraction against the store where the store is intact: the same frame counts for
   every utterance, and the same values on every intact frame of those units. When they differ (the
   audio changed, other weights, another device or thread count that rounds differently) nothing is
   written and the repair says so;
2. writes each damaged stored object whole from the re-extracted frames, under the store's lease;
3. removes ``repair/`` and verifies the store again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import zarr

from common.lease import Lease
from store import format as sf
from store.format import StoreFiles
from store.verify import Affected, VerifyReport, unit_size, verify_store
from store.views import all_view_specs

from .codec_stream import CodecBackend
from .driver import SKIPPED, plan_units
from .run import resolve_device
from .unit import run_unit
from .views import view_backend_audio, view_skip

SCRATCH = "repair"


class RepairError(ValueError):
    """The store cannot be repaired in place (the message says why; nothing was written). A ValueError,
    like every bad-input error of the project, so that `pipeline.errors` gives it one line."""


@dataclass
class RepairResult:
    store: str
    rewritten: list[str] = field(default_factory=list)  # stored objects (chunks or shards) written anew
    utterances: list[str] = field(default_factory=list)  # utterances re-extracted
    units: list[int] = field(default_factory=list)
    compared_frames: int = 0  # intact frames of the re-extracted units found equal to the store's
    report: VerifyReport | None = None  # verify after the repair


def _backend(url: str, attrs: dict, config: dict, streams: tuple[str, ...], lease: Lease) -> CodecBackend:
    """The codec back-end that wrote ``streams``, rebuilt from the store's records, writing into the
    scratch group."""
    root_config = attrs.get("config", {})
    return CodecBackend(
        store=url,
        group=SCRATCH,
        lease=lease.token,
        batch_seconds=config["batch_seconds"],
        max_seconds=config["max_seconds"],
        torch_threads=root_config.get("torch_threads"),
        weights_sha256=attrs["weights"]["sha256"],
        bandwidth=attrs["codec"]["bandwidth"],
        device=resolve_device(root_config.get("device", "auto")),
        window_seconds=config["window_seconds"],
        min_batch_seconds=config["min_batch_seconds"],
        streams=streams,
    )


def _reextract(url: str, units: list[int], size: int, table, skip: set[int], backend: CodecBackend,
               log: Callable[[str], None]) -> dict[str, dict[int, np.ndarray]]:
    """Run ``units`` again into the scratch group; return stream -> row -> frames of its ok rows."""
    rows = list(zip(range(len(table)), table["path"].tolist(), table["split"].astype(str).tolist()))
    out: dict[str, dict[int, np.ndarray]] = {name: {} for name in backend.streams}
    root = zarr.open_group(url, mode="r")
    for task in plan_units(backend, rows, size, skip={r: SKIPPED for r in skip}, units=units):
        log(f"re-extracting work unit {task.unit} ({len(task.rows)} utterance(s))")
        run_unit(task)
        part = root[sf.part_name(task.unit, SCRATCH)]
        ok = [(r["row"], r["n_frames"]) for r in part.attrs["records"] if r["status"] == "ok"]
        for name in backend.streams:
            data = part[name][...] if ok else None
            start = 0
            for row, frames in ok:
                out[name][row] = data[start : start + frames]
                start += frames
    return out


def _intact_ranges(lo: int, hi: int, damaged: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi) minus the damaged ranges."""
    pieces = [(lo, hi)]
    for a, b in damaged:
        pieces = [p for s, e in pieces for p in ((s, min(e, a)), (max(s, b), e)) if p[0] < p[1]]
    return pieces


def _check_and_build(files: StoreFiles, root: zarr.Group, affected: Affected, spec: sf.StreamSpec, table,
                     fresh: dict[int, np.ndarray], units: list[int], size: int) -> tuple[dict[tuple[int, int], np.ndarray], int]:
    """The new content of each damaged stored object of one array, after checking the re-extraction
    against the store's intact frames. Returns ({(start, stop): frames}, intact frames compared)."""
    offsets = root[spec.offsets][...]
    array = root[spec.array]
    objects = sorted({d.object_rows for d in affected.damage})
    ids = table["utt_id"].astype(str).to_numpy()
    for row in affected.repair_rows:
        want = int(offsets[row + 1] - offsets[row])
        got = len(fresh[row]) if row in fresh else None
        if got != want:
            raise RepairError(f"{files.url}: utterance {ids[row]} re-extracts to {got} frames of stream {spec.name!r}, "
                              f"the store holds {want}: its audio or the extraction settings changed since; nothing was "
                              "written. Re-extract into a new store.")
    compared = differing = 0
    lost = [ids[r] for u in units for r in range(u * size, min(len(table), (u + 1) * size))
            if offsets[r + 1] > offsets[r] and r not in fresh]
    if lost:
        raise RepairError(f"{files.url}: utterance(s) {', '.join(lost)} of the re-extracted units no longer extract "
                          "(their audio is missing or unreadable now); nothing was written")
    for row, frames in fresh.items():
        if row // size not in units or offsets[row + 1] == offsets[row]:
            continue
        for lo, hi in _intact_ranges(int(offsets[row]), int(offsets[row + 1]), objects):
            stored = np.asarray(array[lo:hi])
            new = frames[lo - offsets[row] : hi - offsets[row]]
            if new.shape != stored.shape:
                differing += hi - lo
            else:
                differing += int(np.count_nonzero((new != stored).reshape(len(new), -1).any(axis=1)))
            compared += hi - lo
    if differing:
        raise RepairError(f"{files.url}: the re-extraction differs from the store on {differing} of {compared} intact "
                          f"frames of the same work units (stream {spec.name!r}): the audio, the codec weights, the device "
                          "or the thread count differ from the extraction's. Nothing was written; re-extract into a new "
                          "store, or run the repair where the extraction ran.")
    built = {}
    for lo, hi in objects:
        pieces = []
        for row in range(max(0, int(np.searchsorted(offsets, lo, side="right")) - 1), len(offsets) - 1):
            a, b = int(offsets[row]), int(offsets[row + 1])
            if a >= hi:
                break
            if b <= lo or a == b:
                continue
            pieces.append(fresh[row][max(lo, a) - a : min(hi, b) - a])
        data = np.concatenate(pieces)
        if len(data) != hi - lo:
            raise RepairError(f"{files.url}: frames {lo}:{hi} of {spec.array} are not covered by the re-extracted "
                              "utterances; nothing was written")
        built[(lo, hi)] = data.astype(array.dtype)
    return built, compared


def repair_store(url: str, log: Callable[[str], None] = print) -> RepairResult:
    """Repair the damaged chunks of the store's streams (see the module docstring). RepairError when
    the damage is of another kind (tables, attributes, offsets, the codebooks) or the re-extraction
    does not reproduce the store; nothing is written then."""
    report = verify_store(url)
    result = RepairResult(str(url), report=report)
    if report.ok:
        log(f"{url}: nothing to repair (every check passed)")
        return result
    failing = [c.name for c in report.checks if not c.ok]
    if not report.affected or set(failing) - {"chunks", "values"} or \
            len({d.key for d in report.damage}) != len({d.key for a in report.affected for d in a.damage}):
        raise RepairError(f"{url}: --repair re-extracts damaged chunks of the streams' arrays only; this store has "
                          "other damage:\n" + "\n".join(f"  {p}" for p in report.problems) + f"\n{report.repair_hint()}")
    if not all(a.repairable for a in report.affected):
        raise RepairError(f"{url}: --repair re-extracts the codec's streams only; nothing was written\n"
                          f"{report.repair_hint()}")
    files = StoreFiles(url)
    attrs = files.read_group_attrs()
    table = files.read_table(sf.UTTERANCES)
    root = zarr.open_group(url, mode="r+")
    specs = {spec.array: spec for spec in _stream_specs(files, attrs)}
    with Lease(url, "store", log=log) as lease:
        files.remove(SCRATCH)
        try:
            by_group: dict[str, list[Affected]] = {}
            for affected in report.affected:
                by_group.setdefault(_group_of(specs[affected.array]), []).append(affected)
            writes: list[tuple[zarr.Array, str, dict]] = []
            for group, items in by_group.items():
                spec0 = specs[items[0].array]
                config = files.read_group_attrs(group).get("config", {}) if group else attrs["config"]
                size = unit_size(files, attrs, spec0) or 1
                units = sorted({u for a in items for u in a.units})
                skip = set(np.flatnonzero(table["status"].to_numpy() != "ok").tolist()) if group else set()
                skip |= set(view_skip(url, group, table))  # an augmented view's rows outside its splits
                streams = tuple(a.stream for a in items)
                backend = _backend(url, attrs, config, streams, lease)
                audio = view_backend_audio(url, group)  # a view's units are re-made from its recorded recipe
                fresh = _reextract(url, units, size, table, skip,
                                   backend if audio is None else dataclasses.replace(backend, audio=audio), log)
                for affected in items:
                    spec = specs[affected.array]
                    built, compared = _check_and_build(files, root, affected, spec, table, fresh[spec.name], units, size)
                    writes.append((root[spec.array], spec.array, built))
                    result.compared_frames += compared
                    result.utterances += [table["utt_id"].iloc[r] for r in affected.repair_rows]
                    result.units += units
                    result.rewritten += sorted({d.key for d in affected.damage})
            lease.check()
            for array, name, built in writes:  # every check passed: now write
                keys = {d.object_rows: d.key for a in report.affected if a.array == name for d in a.damage}
                for (lo, hi), data in built.items():
                    files.remove(keys[(lo, hi)])  # a damaged shard is never read back
                    array[lo:hi] = data
                    log(f"rewrote {keys[(lo, hi)]} (frames {lo}:{hi})")
        finally:
            files.remove(SCRATCH)
    result.utterances = sorted(set(result.utterances))
    result.units = sorted(set(result.units))
    result.report = verify_store(url)
    return result


_group_of = sf.group_of


def _stream_specs(files: StoreFiles, attrs: dict) -> list[sf.StreamSpec]:
    present = {name for name in (sf.LATENT,) if files.exists(f"{name}/zarr.json")}
    specs = list(sf.stream_specs(attrs, present).values())
    for name in files.list(sf.STREAMS):
        group = sf.added_stream_group(name)
        if files.exists(f"{group}/zarr.json"):
            specs.append(sf.StreamSpec.from_attrs(files.read_group_attrs(group)["stream"]))
    return specs + list(all_view_specs(files).values())

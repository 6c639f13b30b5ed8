"""`pipeline inspect`: what a feature store holds, what made it, and what it costs on disk.

Works on a finished store (through the utterance table) and on one still being extracted (through
the plan and the committed work units' records, read from plain files: :class:`FeatureStore`
refuses unfinished stores). :func:`inspect_store` returns a JSON-ready dict; :func:`format_report`
turns it into the human-readable summary.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pandas as pd
import zarr
from fsspec.implementations.local import LocalFileSystem

from common.lease import LOCK, describe
from common.provenance import short as provenance_line

from . import codebooks
from . import format as sf
from .format import StoreFiles
from .reader import FeatureStore, StoreReadError, check_format
from .views import format_views, view_list
from .writer import done_units

FIRST_FAILURES = 5
"""How many failures the report lists (the count covers them all)."""

BREAKDOWN_COLUMNS = ("split", "label", "system")


def _open_attrs(files: StoreFiles) -> dict:
    """The store's attributes, after checking that this is a feature store of a readable version."""
    if not files.exists():
        raise StoreReadError(f"{files.url}: no feature store here (no zarr.json)")
    try:
        attrs = files.read_group_attrs()
    except ValueError as err:
        raise StoreReadError(f"{files.url}: zarr.json is not readable JSON ({err})") from None
    if not attrs.get("format") and not attrs.get("state"):
        raise StoreReadError(f"{files.url}: the store is being created (its attributes are not written yet), or its "
                             "creation was interrupted: run `pipeline extract` again")
    check_format(files.url, {**attrs, "state": sf.STATE_COMPLETE})  # format and version; any state
    return attrs


def weights_file(files: StoreFiles, attrs: dict) -> str:
    """Absolute path (or full URL, for remote stores) of the codec weights saved in the store."""
    path = files.path(attrs.get("weights", {}).get("file", sf.WEIGHTS))
    return os.path.abspath(path) if isinstance(files.fs, LocalFileSystem) else files.fs.unstrip_protocol(path)


def _read_table(files: StoreFiles, name: str) -> pd.DataFrame:
    try:
        return files.read_table(name)
    except Exception as err:  # missing file, or pyarrow's several errors for a damaged one  # noqa: BLE001
        raise StoreReadError(f"{files.path(name)}: not readable ({type(err).__name__}: {err}); run `pipeline verify`") from None


def _breakdown(table: pd.DataFrame, ok: pd.Series) -> dict[str, dict[str, dict[str, Any]]]:
    """Per value of split, label and system: utterances, ok ones, their audio seconds and frames."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for column in BREAKDOWN_COLUMNS:
        if column not in table:
            continue
        groups: dict[str, dict[str, Any]] = {}
        for value, rows in table.groupby(table[column].astype(str), sort=True):
            good = ok.loc[rows.index]
            groups[str(value)] = {
                "utterances": int(len(rows)),
                "ok": int(good.sum()),
                "audio_seconds": float(rows.loc[good, "duration"].sum()),
                "frames": int(rows.loc[good, "n_frames"].sum()),
            }
        out[column] = groups
    return out


def _failures(failures: pd.DataFrame) -> dict[str, Any]:
    first = failures.head(FIRST_FAILURES).astype(object)
    first = first.where(first.notna(), None)
    return {"count": int(len(failures)), "first": first.to_dict(orient="records")}


def _provenance(files: StoreFiles, attrs: dict) -> dict[str, Any]:
    weights = {**attrs.get("weights", {}), "file": weights_file(files, attrs)}
    weights.setdefault("calibration", None)  # stores made before the calibration sample was recorded
    keys = ("codec", "dataset", "created", "completed", "versions", "config", "provenance", "finished_by")
    return {"weights": weights, **{k: attrs[k] for k in keys if k in attrs}}


def _streams(files: StoreFiles, store: FeatureStore, seconds: float) -> dict[str, dict[str, Any]]:
    """Each stream: frame rate, dtype, frame shape, frames, bytes on disk and per audio second."""
    out = {}
    for name, spec in store.streams.items():
        stream = store.stream(name)
        size = files.size(spec.array)
        out[name] = {"frame_rate": spec.frame_rate, "dtype": spec.dtype, "frame_shape": list(spec.frame_shape),
                     "frames": int(stream.data.shape[0]), "array": spec.array, "bytes": size,
                     "bytes_per_audio_second": size / seconds if seconds > 0 else None, "about": spec.about}
    return out


def _finished(files: StoreFiles, attrs: dict) -> dict[str, Any]:
    table = _read_table(files, sf.UTTERANCES)
    failures = _read_table(files, sf.FAILURES)
    ok = table["status"] == "ok"
    seconds = float(table.loc[ok, "duration"].sum())
    store = FeatureStore(files.url, in_memory=False)
    streams = _streams(files, store, seconds)
    sizes = {**{name: s["bytes"] for name, s in streams.items()},
             **{name: files.size(name) for name in (sf.CODEBOOKS, sf.OFFSETS, sf.UTTERANCES, sf.FAILURES, sf.WEIGHTS)}}
    return {
        "utterances": int(len(table)),
        "ok": int(ok.sum()),
        "failed": int((~ok).sum()),
        "breakdown": _breakdown(table, ok),
        "audio_seconds": seconds,
        "frames": int(table.loc[ok, "n_frames"].sum()),
        "streams": streams,
        "pending_streams": store.pending_streams(),
        "has_latent": sf.LATENT in streams,
        "bytes": {**sizes, "total": files.size("")},
        "bytes_per_audio_second": {name: s["bytes_per_audio_second"] for name, s in streams.items()},
        "failures": _failures(failures),
        "summary": attrs.get("summary", {}),
        "views": view_list(files, table),
    }


def _unfinished(files: StoreFiles, attrs: dict) -> dict[str, Any]:
    """Progress of an extraction: the plan, and the records of the committed work units."""
    if not files.exists(sf.PLAN):
        raise StoreReadError(f"{files.url}: state {attrs.get('state')!r} but no {sf.PLAN}; the store's creation was interrupted, run `pipeline extract` again")
    plan = _read_table(files, sf.PLAN)
    unit_size = int(attrs.get("config", {}).get("unit_size") or len(plan) or 1)
    n_units = math.ceil(len(plan) / unit_size)
    done = done_units(files.url, n_units)
    columns = ["status", "n_frames", "duration", "stage", "reason"]
    records = pd.DataFrame([r for unit in sorted(done) for r in done[unit]], columns=["row", *columns]).set_index("row")
    table = plan.assign(status="pending", n_frames=0, stage=None, reason=None)
    if len(records):
        for column in columns:
            table.loc[records.index, column] = records[column].to_numpy()
    table["n_frames"] = table["n_frames"].fillna(0).astype("int64")
    ok = table["status"] == "ok"
    failed = table.loc[table["status"] == "failed", list(sf.FAILURE_COLUMNS)]
    problems = _read_table(files, sf.PROBLEMS) if files.exists(sf.PROBLEMS) else failed.iloc[:0]
    return {
        "utterances": int(len(plan)),
        "ok": int(ok.sum()),
        "failed": int(len(failed)),
        "progress": {
            "units_done": len(done),
            "units_total": n_units,
            "utterances_done": int(len(records)),
            "utterances_planned": int(len(plan)),
        },
        "breakdown": _breakdown(table, ok),
        "audio_seconds": float(table.loc[ok, "duration"].sum()),
        "frames": int(table.loc[ok, "n_frames"].sum()),
        "bytes": {**{name: files.size(name) for name in (sf.PARTS, sf.CODEBOOKS, sf.PLAN, sf.PROBLEMS, sf.WEIGHTS)},
                  "total": files.size("")},
        "failures": _failures(pd.concat([problems, failed], ignore_index=True)),
    }


def inspect_store(url: str) -> dict[str, Any]:
    """Everything :func:`format_report` prints, as a JSON-ready dict (see ``pipeline inspect --json``)."""
    files = StoreFiles(url)
    for attempt in range(3):
        attrs = _open_attrs(files)
        state = attrs.get("state")
        try:
            body = _finished(files, attrs) if state == sf.STATE_COMPLETE else _unfinished(files, attrs)
            break
        except (StoreReadError, OSError):
            # an extraction finishing (or a creation restarting) while it is inspected: look again
            if attempt == 2 or _open_attrs(files).get("state") == state:
                raise
    head = {"store": files.url, "format": attrs["format"], "format_version": attrs.get("format_version"), "state": state}
    return {**head, **body, **_provenance(files, attrs), "codebooks": _codebooks(files, attrs), "lease": _lease(files)}


def _codebooks(files: StoreFiles, attrs: dict) -> dict[str, Any]:
    """Codebook usage per level (`store.codebooks.report`); the zero codewords read from the codebooks."""
    try:
        tables = zarr.open_group(files.url, mode="r")[sf.CODEBOOKS][...] if files.exists(f"{sf.CODEBOOKS}/zarr.json") else None
    except (KeyError, OSError, ValueError):
        tables = None
    return codebooks.report(tables, attrs.get("summary", {}), attrs.get("weights", {}).get("calibration"))


def _lease(files: StoreFiles) -> dict[str, Any] | None:
    """The lease file of the process writing the store now (or of one that died), if any."""
    try:
        holder = json.loads(files.read_bytes(LOCK))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s ({seconds / 3600:.2f} h)" if seconds >= 3600 else f"{seconds:.1f} s ({seconds / 60:.1f} min)"


def _table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    headers = (title, "utterances", "ok", "audio (s)", "frames")
    rows = [(k, str(v["utterances"]), str(v["ok"]), f"{v['audio_seconds']:.1f}", str(v["frames"])) for k, v in groups.items()]
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(len(headers))]
    return ["  " + "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]) for r in (headers, *rows)]


def _calibration_lines(weights: dict[str, Any]) -> list[str]:
    record = weights.get("calibration")
    if not record:
        return ["calibration not recorded"] if weights.get("trained") is False else []
    counts = "; ".join(f"{key} " + ", ".join(f"{k} {v}" for k, v in record.get(key, {}).items()) for key in ("labels", "speakers", "systems"))
    lines = [f"calibration seed {record.get('seed')}: {len(record.get('utterances', []))} utterances of {', '.join(record.get('splits', []))}, "
             f"{record.get('seconds')} s; {counts}"]
    return lines + ([f"            {record['note'].upper()}"] if record.get("note") else [])


def _cell(value: Any) -> str:
    return "not recorded" if value is None else str(value)


def _codebook_lines(usage: dict[str, Any] | None) -> list[str]:
    if not usage or not usage.get("levels"):
        return []
    cell = _cell
    lines = [f"codebooks   per level: codewords used by the store's codes ({cell(usage.get('frames'))} frames) / "
             "by the calibration frames / equal to zero, of the codebook size"]
    for level in usage["levels"]:
        lines.append(f"  level {level['level']}: {cell(level['used'])} / {cell(level['used_calibration'])} / "
                     f"{cell(level['zero'])} of {cell(level['size'])}")
    return lines


def format_report(info: dict[str, Any]) -> str:
    """The human-readable summary of :func:`inspect_store`'s result."""
    codec, weights = info.get("codec", {}), info["weights"]
    lines = [f"store       {info['store']}"]
    if info["state"] == sf.STATE_COMPLETE:
        lines.append(f"state       complete ({info['format']} v{info['format_version']}); created {info.get('created')}, completed {info.get('completed')}")
    else:
        p = info["progress"]
        lines.append(
            f"state       {info['state'].upper()}: extraction not finished: {p['units_done']} of {p['units_total']} work units done "
            f"({p['utterances_done']} of {p['utterances_planned']} utterances); run `pipeline extract` again to resume it"
        )
    lines += [
        f"codec       {codec.get('name')}, {codec.get('bandwidth')} kbps, n_q {codec.get('n_q')}, {codec.get('sample_rate')} Hz, "
        f"{codec.get('frame_rate')} frames/s, codebooks {codec.get('codebook_size')} x {codec.get('dim')}",
        f"weights     {weights.get('label')}",
        f"            source {weights.get('source')}, origin {weights.get('origin')}",
        f"            file {weights['file']}",
        f"            sha256 {weights.get('sha256')}",
        *_calibration_lines(weights),
        *_codebook_lines(info.get("codebooks")),
    ]
    if "dataset" in info:
        d = info["dataset"]
        lines.append(f"dataset     {d.get('name')}: {d.get('description')}")
    lines.append(f"utterances  {info['utterances']} ({info['ok']} ok, {info['failed']} failed)")
    for column, groups in info["breakdown"].items():
        lines += _table(column, groups)
    lines.append(f"audio       {_duration(info['audio_seconds'])} in ok utterances, {info['frames']} frames")
    for name, stream in info.get("streams", {}).items():
        shape = " x ".join(str(n) for n in stream["frame_shape"])
        rate = stream["bytes_per_audio_second"]
        lines.append(f"stream      {name}: {stream['frame_rate']:g} frames/s, {stream['dtype']} [{shape}], {stream['frames']} frames, "
                     f"{_size(stream['bytes'])}" + (f" ({_size(rate)} per audio second)" if rate else "")
                     + (f"; {stream['about']}" if stream["about"] else ""))
    lines += format_views(info.get("views", []))
    for name in info.get("pending_streams", []):
        lines.append(f"stream      {name}: BEING ADDED (unfinished); run the same `pipeline extract` again")
    sizes = ", ".join(f"{k} {_size(v)}" for k, v in info["bytes"].items() if k != "total")
    lines.append(f"disk        {_size(info['bytes']['total'])} in all: {sizes}")
    failures = info["failures"]
    lines.append(f"failures    {failures['count']}")
    for f in failures["first"]:
        lines.append(f"  {f.get('utt_id') or '-'}  {f.get('path')}  [{f.get('stage')}] {f.get('reason')}")
    if failures["count"] > len(failures["first"]):
        lines.append(f"  ... and {failures['count'] - len(failures['first'])} more (failures.parquet)")
    if info.get("lease"):
        lines.append(f"writer      {describe(info['lease'], float(info['lease'].get('expiry_seconds') or 0))}")
    if "versions" in info:
        lines.append("versions    " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if "config" in info:
        lines.append("config      " + json.dumps(info["config"], sort_keys=True))
    if info.get("provenance"):
        lines.append(f"made by     {provenance_line(info['provenance'])}")
    return "\n".join(lines)

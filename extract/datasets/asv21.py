"""What ASVspoof 2021 LA (``asv21la``) and DF (``asv21df``) share: a trial list, an audio folder and,
once released, a keys package whose CM ``trial_metadata.txt`` labels every trial.

::

    ROOT/ASVspoof2021_{LA,DF}_eval/flac/{LA,DF}_E_nnnnnnn.flac
    ROOT/ASVspoof2021_{LA,DF}_eval/ASVspoof2021.{LA,DF}.cm.eval.trl.txt      one trial id a line
    ROOT/keys/{LA,DF}/CM/trial_metadata.txt                                  optional: the keys

Every trial of the list goes into split ``eval``; its phase (progress, eval, hidden) is a metadata
column from the keys. Without the keys the trials are extracted unlabelled (label ``-``) and the
store records which keys file evaluation needs. Problems, each naming file and line: a trial the
keys lack, a key line for a trial not in the list, a trial whose audio file is missing, an unknown
condition, phase or vocoder value, a duplicate id (in either file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from extract.datasets.base import (
    BONAFIDE,
    COLUMNS,
    UNKNOWN,
    UNLABELLED,
    DatasetError,
    DatasetTable,
    PathGuard,
    TableBuilder,
    existing_root,
    iter_protocol,
    validate_table,
)

PHASES: tuple[str, ...] = ("progress", "eval", "hidden")
"""The phases of the 2021 keys: eval is the headline, progress and hidden are reported apart."""


@dataclass(frozen=True)
class KeyLine:
    """One parsed line of a keys file: the standard columns' values and the extra columns'."""

    where: str
    speaker: str
    system: str
    codec: str
    label: str
    extra: dict[str, str]


@dataclass(frozen=True)
class Layout:
    """One 2021 track's files and how a keys line reads (``parse``: fields -> KeyLine fields or an
    error string)."""

    track: str
    keys_format: str
    extra_columns: tuple[str, ...]
    parse: Callable[[list[str]], tuple[dict, str | None]]

    @property
    def eval_dir(self) -> str:
        return f"ASVspoof2021_{self.track}_eval"

    @property
    def trial_list(self) -> str:
        return f"{self.eval_dir}/ASVspoof2021.{self.track}.cm.eval.trl.txt"

    @property
    def keys(self) -> str:
        return f"keys/{self.track}/CM/trial_metadata.txt"


def check_value(name: str, value: str, allowed: Sequence[str]) -> str | None:
    """None when ``value`` is one of ``allowed``, else the problem's text."""
    if value in allowed:
        return None
    return f"unknown {name} {value!r} (expected one of {', '.join(allowed)})"


def _audio_names(directory: str) -> set[str]:
    """Names in ``directory`` (one listing; a missing folder has none)."""
    try:
        with os.scandir(directory) as entries:
            return {e.name for e in entries}
    except OSError:
        return set()


def _read_keys(path: Path, layout: Layout, builder: TableBuilder) -> dict[str, KeyLine]:
    """The keys file's lines by trial id; bad lines become problems in ``builder``."""
    keys: dict[str, KeyLine] = {}
    for where, fields in iter_protocol(path, builder, layout.keys_format):
        trial = fields[1]
        if trial in keys:
            builder.reject(where, f"duplicate trial id {trial!r} (first at {keys[trial].where})", path=str(path),
                           utt_id=trial)
            continue
        values, error = layout.parse(fields)
        if error:
            builder.reject(where, error, path=str(path), utt_id=trial)
            continue
        keys[trial] = KeyLine(where, **values)
    return keys


_SAFE_ID = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"


def _fast_table(layout: Layout, guard: PathGuard, trial_list: Path, keys_path: Path, audio_dir: str,
                present: set[str]) -> pd.DataFrame | None:
    """The table when the files are clean (every line well formed, every value known, ids unique and
    safe, the keys and the list agreeing, every file present, no symlink), built column-wise; None
    otherwise, and the line-by-line reader names each problem. DF's 611,829 trials: seconds, not a minute."""
    try:
        trials = [line.split() for line in trial_list.read_text("utf-8").lstrip("\ufeff").splitlines() if line.strip()]
        key_text = keys_path.read_text("utf-8").lstrip("\ufeff") if keys_path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
    if any(len(t) != 1 for t in trials):
        return None
    ids = pd.Series([t[0] for t in trials], dtype=object)
    if not ids.is_unique or not ids.str.fullmatch(_SAFE_ID).all() or ids.str.contains("..", regex=False).any():
        return None
    directory, links = guard._directory(audio_dir)
    names = ids + ".flac"
    if not names.isin(present).all() or names.isin(links).any() or not directory.startswith(guard._prefix):
        return None
    frame = pd.DataFrame({"utt_id": ids, "path": directory + names})
    if key_text is None:
        for column in ("speaker", "system", "codec", *layout.extra_columns):
            frame[column] = UNKNOWN
        frame["label"] = UNLABELLED
    else:
        n = len(layout.keys_format.split())
        rows = [line.split() for line in key_text.splitlines() if line.strip()]
        if any(len(r) != n for r in rows) or len(rows) != len(ids):
            return None
        keys = pd.DataFrame(rows, columns=[f"f{k}" for k in range(n)], dtype=object)
        if not keys["f1"].is_unique or not keys["f1"].isin(ids).all():
            return None
        values = [f"f{k}" for k in range(2, n)]
        combos = keys[values].drop_duplicates()
        parsed = []
        for combo in combos.itertuples(index=False):
            row, error = layout.parse(["-", "-", *combo])
            if error:
                return None
            parsed.append({"system": row["system"], "codec": row["codec"], "label": row["label"], **row["extra"]})
        derived = pd.concat([combos.reset_index(drop=True), pd.DataFrame(parsed)], axis=1)
        keys = keys.merge(derived, on=values, how="left").rename(columns={"f0": "speaker", "f1": "utt_id"})
        frame = frame.merge(keys[["utt_id", "speaker", "system", "codec", "label", *layout.extra_columns]],
                            on="utt_id", how="left")
    frame["split"] = "eval"
    frame = frame[[c for c in COLUMNS if c != "duration"] + list(layout.extra_columns)].astype(str)
    frame.insert(len(COLUMNS) - 1, "duration", np.nan)
    return frame


def load_2021(layout: Layout, root: Path | str, description: str, fast: bool = True) -> DatasetTable:
    """The utterance table of one 2021 track (module docstring); ``fast``: try :func:`_fast_table` first."""
    root = existing_root(root)
    guard = PathGuard(root)
    trial_list = root / layout.trial_list
    keys_path = root / layout.keys
    builder = TableBuilder(layout.extra_columns, unlabelled=True)
    hint = f"ROOT must be the folder that holds {layout.eval_dir}/ (and keys/)"
    if not trial_list.is_file():
        raise DatasetError(f"trial list not found: {trial_list} ({hint})")
    audio_dir = f"{layout.eval_dir}/flac"
    present = _audio_names(str(root / audio_dir))
    attrs = {"metadata": list(layout.extra_columns), "keys": str(keys_path), "keys_found": keys_path.is_file(),
             "phases": list(PHASES)}
    found = "with keys" if keys_path.is_file() else f"WITHOUT keys ({keys_path} not found: evaluation needs it)"
    table = _fast_table(layout, guard, trial_list, keys_path, audio_dir, present) if fast else None
    if table is not None:
        validate_table(table)
        return DatasetTable(table, [], f"{description} at {root}, {found}", attrs)
    keys = _read_keys(keys_path, layout, builder) if keys_path.is_file() else None
    listed: dict[str, str] = {}
    for where, (trial,) in iter_protocol(trial_list, builder, "TRIAL", hint):
        if trial in listed:
            builder.reject(where, f"duplicate trial id {trial!r} (first at {listed[trial]})", path=str(trial_list),
                           utt_id=trial)
            continue
        listed[trial] = where
        path = builder.guarded_path(guard, f"{audio_dir}/{trial}.flac", where, trial)
        if path is None:
            continue
        if f"{trial}.flac" not in present:
            builder.reject(where, f"audio file {path} not found", path=path, utt_id=trial)
            continue
        if keys is None:
            row = {"speaker": UNKNOWN, "system": UNKNOWN, "codec": UNKNOWN, "label": UNLABELLED,
                   **dict.fromkeys(layout.extra_columns, UNKNOWN)}
        elif trial not in keys:
            builder.reject(where, f"trial {trial!r} has no line in the keys file {keys_path}", path=path,
                           utt_id=trial)
            continue
        else:
            key = keys[trial]
            row = {"speaker": key.speaker, "system": key.system, "codec": key.codec, "label": key.label, **key.extra}
        builder.add(where, utt_id=trial, split="eval", path=path, **row)
    for trial, key in (keys or {}).items():
        if trial not in listed:
            builder.reject(key.where, f"trial {trial!r} of the keys is not in the trial list {trial_list}",
                           path=str(keys_path), utt_id=trial)
    return builder.build(f"{description} at {root}, {found}", attrs)


def spoof_system(attack: str, key: str) -> str:
    """The standard ``system`` of a keys line: ``bonafide`` on bona fide lines, else the attack."""
    return BONAFIDE if key == BONAFIDE else attack

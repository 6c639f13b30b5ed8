"""What `pipeline score` writes: one row per file, in CSV, JSON lines, an official ASVspoof score
file, or a plain table.

Columns: ``path``; ``score`` (the model's logit, higher = more bona fide: what `pipeline evaluate`
writes); ``llr`` (the calibrated log-likelihood ratio, empty when the model has no calibration);
``decision`` (``bonafide`` / ``spoof`` at the threshold; empty when there is none); ``duration``
(seconds of audio in the file); ``error`` (why the file could not be scored: its other fields are
then empty); ``codec_weights`` (the label of the codec weights behind the score, on every row, so
that no row can be mistaken for a result of another codec).

``asvspoof`` is the ASVspoof5 score file (``filename<TAB>cm-score`` with that header), one line per
scored file, the file name without its extension as the id and the raw score, as `evaluate`'s
``scores.tsv``; files that failed have no line there (`pipeline score` lists them, with their errors,
in the results' ``.meta.json``: ``failed_files``).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from classify.scorefiles import SCORE_FORMAT_REGISTRY

_ASVSPOOF = SCORE_FORMAT_REGISTRY["asvspoof5"]

FORMATS = ("csv", "jsonl", "asvspoof", "table")
COLUMNS = ("path", "score", "llr", "decision", "duration", "error", "codec_weights")
_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".txt": "asvspoof", ".tsv": "asvspoof", ".csv": "csv"}


@dataclass(frozen=True)
class ScoreRow:
    """One file's result (see the module docstring); ``score``/``llr``/``duration`` None when unknown."""

    path: str
    score: float | None = None
    llr: float | None = None
    decision: str = ""
    duration: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def format_for(out: str | Path | None, fmt: str | None) -> str:
    """``fmt``, or the default: ``table`` on stdout, else by the file's suffix (csv when unknown)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
        return fmt
    return "table" if out is None else _BY_SUFFIX.get(Path(out).suffix.lower(), "csv")


def _number(value: float | None, digits: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if digits is None else f"{value:.{digits}f}"


class RowWriter:
    """Writes rows to ``handle`` as they come, in format ``fmt`` (:data:`FORMATS`); every row names
    ``codec_label``."""

    def __init__(self, handle: TextIO, fmt: str, codec_label: str) -> None:
        self.handle, self.fmt, self.codec_label = handle, format_for(None, fmt), codec_label
        self._ids: dict[str, str] = {}
        self._csv = csv.writer(handle, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(COLUMNS)
        elif fmt == "asvspoof":
            handle.writelines(_ASVSPOOF.lines([], []))
        elif fmt == "table":
            handle.write(f"# codec weights: {codec_label}\n{'score':>10} {'llr':>9} {'decision':<9} "
                         f"{'seconds':>8}  path\n")

    def write(self, row: ScoreRow) -> None:
        """Write one row (``asvspoof``: ValueError when two scored files share a name)."""
        if self._csv is not None:
            self._csv.writerow([row.path, _number(row.score), _number(row.llr), row.decision,
                                _number(row.duration), row.error, self.codec_label])
        elif self.fmt == "jsonl":
            self.handle.write(json.dumps({**asdict(row), "codec_weights": self.codec_label}) + "\n")
        elif self.fmt == "asvspoof":
            if row.ok:
                utt = "_".join(Path(row.path).stem.split())
                if utt in self._ids:
                    raise ValueError(f"{row.path} and {self._ids[utt]} have the same name {utt!r}, the id of the "
                                     "ASVspoof score file; use --format csv or jsonl, which keep whole paths")
                self._ids[utt] = row.path
                self.handle.writelines(_ASVSPOOF.lines([utt], [float(row.score)])[1:])
        else:
            result = f"  ERROR: {row.error}" if row.error else ""
            self.handle.write(f"{_number(row.score, 4):>10} {_number(row.llr, 3):>9} {row.decision:<9} "
                              f"{_number(row.duration, 2):>8}  {row.path}{result}\n")
        self.handle.flush()

"""The official per-condition tables of the cross-corpus evaluations, vectorised.

Definitions (ASVspoof 2021 evaluation package, ``eval-package/main.py``, ``config.py``,
``eval_wrapper.py``; re-stated here, not copied):

* A table crosses two *factors* (rows x columns), each with its listed values plus a ``pooled``
  entry. A factor is *spoof-only* (attack, vocoder type: bona fide trials have none) or *both*
  (codec or compression condition). A cell's bona fide trials are those matching its *both*
  factors only; its spoof trials match every factor; ``pooled`` matches everything. So a spoof-only
  factor keeps every bona fide trial.
* A cell's EER is the official EER (`classify.metrics.compute_eer`: DET of the stable sort of
  [bona fide, spoof], first point minimising |frr - far|, their mean); NaN (``None`` in JSON) when
  the cell lacks a class.
* LA's min t-DCF is the revised (2021) one: with the ASV scores of the cell (target and non-target
  trials matching its *both* factors, spoofs matching all of them), the ASV threshold is the ASV
  EER threshold of target vs non-target, Pmiss_asv = P(target < t), Pfa_asv = P(non-target >= t),
  Pfa_spoof_asv = P(spoof >= t); C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv,
  C1 = Ptar Cmiss - C0, C2 = Pspoof Cfa_spoof Pfa_spoof_asv (:data:`COST_2021`); over the CM DET
  points t-DCF = (C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2)), its minimum. Undefined
  (``None``) when an ASV class of the cell is empty, the CM scores take fewer than 3 values (the
  official package stops there), or the normaliser is 0.
* Phases (progress, eval, hidden) are evaluated apart; eval is the headline.

Speed (bench/bench_tables.py): the scores are sorted once; each pooling pattern's trials are then
grouped by a stable integer sort, so every cell's bona fide and spoof scores are contiguous sorted
slices, and a cell's DET points come from two ``searchsorted`` of those slices: no sort per cell.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from classify.metrics import compute_eer

POOLED = "pooled"


@dataclass(frozen=True)
class Factor:
    """One axis of a table: a column of the trial frame, its values in table order (None: the
    values present, sorted), whether it is spoof-only, and display names of the values."""

    column: str
    values: tuple[str, ...] | None
    spoof_only: bool
    names: dict[str, str] | None = None

    def levels(self, frame: pd.DataFrame) -> list[str]:
        if self.values is not None:
            return list(self.values)
        return sorted(set(frame.loc[frame["label"] == "spoof" if self.spoof_only else slice(None), self.column]))

    def name(self, value: str) -> str:
        return (self.names or {}).get(value, value)


@dataclass(frozen=True)
class TableSpec:
    """One official table: rows x columns (``cols`` None: one column, pooled); ``tdcf``: with the
    min t-DCF when ASV scores are given."""

    title: str
    rows: Factor
    cols: Factor | None = None
    tdcf: bool = False


@dataclass(frozen=True)
class Cost2021:
    """The ASVspoof 2021 revised t-DCF parameters (the evaluation package's ``config.cost_model``)."""

    p_spoof: float = 0.05
    p_tar: float = (1 - 0.05) * 0.99
    p_non: float = (1 - 0.05) * 0.01
    c_miss: float = 1.0
    c_fa: float = 10.0
    c_fa_spoof: float = 10.0


COST_2021 = Cost2021()
LA_ATTACKS = tuple(f"A{n:02d}" for n in range(7, 20))
LA_CONDITIONS = tuple(f"C{n}" for n in range(1, 8))
DF_CONDITIONS = tuple(f"C{n}" for n in range(1, 10))
DF_VOCODERS = ("traditional_vocoder", "waveform_concatenation", "neural_vocoder_autoregressive",
               "neural_vocoder_nonautoregressive", "unknown")
PHASES = ("eval", "progress", "hidden")

TABLES: dict[str, tuple[TableSpec, ...]] = {
    "asv21la": (TableSpec("attack x condition", Factor("system", LA_ATTACKS, True),
                          Factor("condition", LA_CONDITIONS, False), tdcf=True),),
    "asv21df": (TableSpec("vocoder x condition", Factor("vocoder", DF_VOCODERS, True, {
        "traditional_vocoder": "Traditional", "waveform_concatenation": "Wav.Concat.",
        "neural_vocoder_autoregressive": "Neural AR", "neural_vocoder_nonautoregressive": "Neural non-AR",
        "unknown": "Unknown"}), Factor("condition", DF_CONDITIONS, False)),),
    "itw": (TableSpec("speaker", Factor("speaker", None, False)),),
    "mlaad": (TableSpec("language", Factor("language", None, False)), TableSpec("model", Factor("model", None, True))),
    "codecfake": (TableSpec("condition", Factor("condition", None, False)),),
}
"""The official (or, for corpora without an official package, the customary) tables of each dataset."""


@dataclass(frozen=True)
class AsvTrials:
    """ASV scores joined to their keys: ``frame`` has ``score``, ``label`` (target, nontarget,
    spoof) and the factor columns (``system``, ``condition``, ``phase``)."""

    frame: pd.DataFrame
    source: str


ASV_KEYS = ("target", "nontarget", "spoof")


def read_asv_2021(keys_path: str, scores_path: str, conditions: dict[str, str]) -> AsvTrials:
    """The ASV trials of the 2021 keys package: ``keys/LA/ASV/trial_metadata.txt`` (8 columns
    ``SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM PHASE``, KEY target|nontarget|spoof) and its
    score file (``ASV_SPEAKER TRIAL SCORE``), joined line by line as the official package does;
    ``conditions`` maps CODEC to the condition names (the store's record). ValueError naming file
    and line on any mismatch."""
    def lines(path: str, n_fields: int):
        try:
            text = open(path, encoding="utf-8").read().splitlines()  # noqa: SIM115
        except OSError as err:
            raise ValueError(f"cannot read ASV file {path}: {err.strerror or err}") from None
        for number, line in enumerate(text, 1):
            fields = line.split()
            if fields and len(fields) != n_fields:
                raise ValueError(f"{path}:{number}: expected {n_fields} columns, found {len(fields)}")
            if fields:
                yield number, fields

    keys = list(lines(keys_path, 8))
    scores = list(lines(scores_path, 3))
    if len(keys) != len(scores):
        raise ValueError(f"{scores_path}: {len(scores)} ASV scores but {len(keys)} trials in {keys_path}")
    rows = []
    for (k_line, key), (s_line, score) in zip(keys, scores, strict=True):
        if key[1] != score[1]:
            raise ValueError(f"{scores_path}:{s_line}: trial {score[1]!r}, but {keys_path}:{k_line} is {key[1]!r}")
        if key[5] not in ASV_KEYS:
            raise ValueError(f"{keys_path}:{k_line}: ASV key {key[5]!r} is not one of {', '.join(ASV_KEYS)}")
        try:
            value = float(score[2])
        except ValueError:
            raise ValueError(f"{scores_path}:{s_line}: score {score[2]!r} is not a number") from None
        rows.append((conditions.get(key[2], key[2]), key[4], key[5], key[7], value))
    frame = pd.DataFrame(rows, columns=["condition", "system", "label", "phase", "score"])
    return AsvTrials(frame, scores_path)


# -- the DET of one cell, from sorted slices ----------------------------------------------------------------


def det_points(bona: np.ndarray, spoof: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frr, far, position) of every point of the official DET curve of two ascending score
    arrays; ``position`` is the point's index on the official curve (0: nothing rejected), so the
    curve's first minimum of anything is the minimum with the smallest position."""
    nb, ns = bona.size, spoof.size
    spoof_below = np.searchsorted(spoof, bona, side="left")  # spoofs rejected before each bona fide trial
    bona_upto = np.searchsorted(bona, spoof, side="right")  # bona fide rejected before each spoof (ties: bona first)
    i = np.arange(1, nb + 1)
    j = np.arange(1, ns + 1)
    frr = np.concatenate(([0.0], i / nb, bona_upto / nb))
    far = np.concatenate(([1.0], (ns - spoof_below) / ns, (ns - j) / ns))
    position = np.concatenate(([0], i + spoof_below, j + bona_upto))
    return frr, far, position


def eer_sorted(bona: np.ndarray, spoof: np.ndarray) -> float:
    """The official EER of two ascending score arrays (NaN when one is empty)."""
    if not bona.size or not spoof.size:
        return float("nan")
    frr, far, position = det_points(bona, spoof)
    gap = np.abs(frr - far)
    best = np.flatnonzero(gap == gap.min())
    k = best[np.argmin(position[best])]
    return float(np.mean((frr[k], far[k])))


def _distinct(sorted_values: np.ndarray) -> int:
    return int(sorted_values.size and 1 + np.count_nonzero(np.diff(sorted_values)))


def min_tdcf_sorted(bona: np.ndarray, spoof: np.ndarray, c012: tuple[float, float, float]) -> float:
    """The revised min t-DCF of two ascending CM score arrays with the cell's (C0, C1, C2); NaN when
    undefined (module docstring)."""
    c0, c1, c2 = c012
    if not bona.size or not spoof.size or not np.isfinite([c0, c1, c2]).all():
        return float("nan")
    if _distinct(bona) + _distinct(spoof) < 6 and np.unique(np.concatenate((bona, spoof))).size < 3:
        return float("nan")
    default = c0 + min(c1, c2)
    if default == 0:
        return float("nan")
    frr, far, _ = det_points(bona, spoof)
    return float(np.min((c0 + c1 * frr + c2 * far) / default))


def c012(target: np.ndarray, nontarget: np.ndarray, spoof: np.ndarray, cost: Cost2021 = COST_2021
         ) -> tuple[float, float, float]:
    """C0, C1, C2 of the revised t-DCF from one cell's ASV scores (NaNs when a class is empty)."""
    if not (target.size and nontarget.size and spoof.size):
        return float("nan"), float("nan"), float("nan")
    _, threshold = compute_eer(target, nontarget)
    pfa = np.sum(nontarget >= threshold) / nontarget.size
    pmiss = np.sum(target < threshold) / target.size
    pfa_spoof = np.sum(spoof >= threshold) / spoof.size
    c0 = cost.p_tar * cost.c_miss * pmiss + cost.p_non * cost.c_fa * pfa
    c1 = cost.p_tar * cost.c_miss - (cost.p_tar * cost.c_miss * pmiss + cost.p_non * cost.c_fa * pfa)
    c2 = cost.p_spoof * cost.c_fa_spoof * pfa_spoof
    return float(c0), float(c1), float(c2)


# -- grouping: every cell's trials as contiguous sorted slices ----------------------------------------------


class Cells:
    """The scores of a trial frame grouped for one table: ``slice(kind, r, c)`` is the ascending
    scores of class ``kind`` (True: bona fide) in row ``r`` and column ``c`` (index ``len(levels)``:
    pooled), with the official selection rules applied (module docstring)."""

    def __init__(self, scores: np.ndarray, is_bona: np.ndarray, row_codes: np.ndarray, col_codes: np.ndarray,
                 n_rows: int, n_cols: int, rows_spoof_only: bool, cols_spoof_only: bool):
        order = np.argsort(scores, kind="stable")  # the one sort by score
        self.scores = scores[order]
        self.is_bona = is_bona[order]
        self.rows, self.cols = row_codes[order], col_codes[order]
        self.n_rows, self.n_cols = n_rows, n_cols
        self.spoof_only = (rows_spoof_only, cols_spoof_only)
        self._groups: dict[tuple[bool, bool], tuple[np.ndarray, np.ndarray, dict[int, tuple[int, int]]]] = {}

    def _key(self, r_pooled: bool, c_pooled: bool) -> np.ndarray:
        """Group key of every trial (-1: in no group) for one pooling pattern."""
        width = self.n_cols + 1
        r = np.where(r_pooled, self.n_rows, self.rows)
        c = np.where(c_pooled, self.n_cols, self.cols)
        key = (r * width + c) * 2 + self.is_bona
        return np.where((r < 0) | (c < 0), -1, key)

    def _pattern(self, r_pooled: bool, c_pooled: bool):
        if (r_pooled, c_pooled) not in self._groups:
            key = self._key(r_pooled, c_pooled)
            order = np.argsort(key, kind="stable")  # keeps the score order inside each group
            key_sorted = key[order]
            starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
            ends = np.r_[starts[1:], key_sorted.size]
            bounds = {int(key_sorted[s]): (int(s), int(e)) for s, e in zip(starts, ends) if key_sorted[s] >= 0}
            self._groups[(r_pooled, c_pooled)] = (self.scores[order], key_sorted, bounds)
        return self._groups[(r_pooled, c_pooled)]

    def slice(self, bona: bool, r: int, c: int) -> np.ndarray:
        r_pooled = r == self.n_rows or (bona and self.spoof_only[0])
        c_pooled = c == self.n_cols or (bona and self.spoof_only[1])
        r, c = (self.n_rows if r_pooled else r), (self.n_cols if c_pooled else c)
        values, _, bounds = self._pattern(r_pooled, c_pooled)
        start, end = bounds.get((r * (self.n_cols + 1) + c) * 2 + int(bona), (0, 0))
        return values[start:end]


def _codes(values: pd.Series, levels: Sequence[str]) -> np.ndarray:
    return pd.Index(list(levels)).get_indexer(values.astype(str)).astype(np.int64)


def _nan_to_none(array: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in array]


def condition_table(frame: pd.DataFrame, spec: TableSpec, asv: AsvTrials | None = None) -> dict[str, Any]:
    """One table of one phase's trials (``frame``: score, label and the factor columns)."""
    rows = spec.rows.levels(frame)
    cols = spec.cols.levels(frame) if spec.cols else []
    scores = frame["score"].to_numpy(np.float64)
    is_bona = (frame["label"] == "bonafide").to_numpy()
    row_codes = _codes(frame[spec.rows.column], rows)
    col_codes = _codes(frame[spec.cols.column], cols) if spec.cols else np.zeros(len(frame), np.int64)
    n_cols = len(cols) if spec.cols else 0
    cells = Cells(scores, is_bona, row_codes, col_codes, len(rows), n_cols, spec.rows.spoof_only,
                  bool(spec.cols and spec.cols.spoof_only))
    shape = (len(rows) + 1, n_cols + 1)
    eer, n_bona, n_spoof = np.full(shape, np.nan), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    tdcf = np.full(shape, np.nan) if spec.tdcf and asv is not None else None
    coefficients = _asv_coefficients(asv.frame, spec, rows, cols) if tdcf is not None else None
    for r in range(shape[0]):
        for c in range(shape[1]):
            bona, spoof = cells.slice(True, r, c), cells.slice(False, r, c)
            n_bona[r, c], n_spoof[r, c] = bona.size, spoof.size
            eer[r, c] = eer_sorted(bona, spoof)
            if tdcf is not None:
                tdcf[r, c] = min_tdcf_sorted(bona, spoof, coefficients[r][c])
    table: dict[str, Any] = {
        "rows": [spec.rows.name(v) for v in rows] + [POOLED],
        "row_values": rows + [POOLED], "row_factor": spec.rows.column,
        "columns": ([spec.cols.name(v) for v in cols] if spec.cols else []) + [POOLED],
        "column_values": cols + [POOLED], "column_factor": spec.cols.column if spec.cols else None,
        "eer": _nan_to_none(eer), "n_bonafide": n_bona.tolist(), "n_spoof": n_spoof.tolist(),
    }
    if spec.tdcf:
        table["min_tdcf"] = _nan_to_none(tdcf) if tdcf is not None else None
        table["note"] = (f"min t-DCF: ASVspoof 2021 revised, ASV scores {asv.source}" if tdcf is not None else
                         "EER only: no ASV scores (the keys package's keys/LA/ASV/), so no min t-DCF")
    return table


def _asv_coefficients(frame: pd.DataFrame, spec: TableSpec, rows: list[str], cols: list[str]) -> list[list[tuple]]:
    """(C0, C1, C2) of every cell from the ASV trials (selection as for the CM, module docstring)."""
    scores = frame["score"].to_numpy(np.float64)
    label = frame["label"].to_numpy()
    factors = [(spec.rows, rows), *([(spec.cols, cols)] if spec.cols else [])]
    masks = []
    for factor, levels in factors:
        column = frame[factor.column].astype(str).to_numpy()
        masks.append([column == v for v in levels] + [np.ones(len(frame), bool)])
    threshold_cache: dict[tuple, tuple] = {}
    out = []
    for r in range(len(rows) + 1):
        line = []
        for c in range(len(cols) + 1):
            picks = [(factors[0][0], masks[0][r])] + ([(factors[1][0], masks[1][c])] if spec.cols else [])
            spoof_mask = (label == "spoof") & np.logical_and.reduce([m for _, m in picks])
            both = [m for f, m in picks if not f.spoof_only]
            both_mask = np.logical_and.reduce(both) if both else np.ones(len(frame), bool)
            key = (r if not spec.rows.spoof_only else -1, c if spec.cols and not spec.cols.spoof_only else -1)
            if key not in threshold_cache:
                threshold_cache[key] = (scores[both_mask & (label == "target")], scores[both_mask & (label == "nontarget")])
            target, nontarget = threshold_cache[key]
            line.append(c012(target, nontarget, scores[spoof_mask]))
        out.append(line)
    return out


def corpus_tables(dataset: str | None, frame: pd.DataFrame, asv: AsvTrials | None = None) -> dict[str, Any]:
    """Pooled EER and the official tables of a scored trial frame (columns ``score``, ``label`` and
    the metadata), per phase when it has a ``phase`` column: ``{"phases": {phase: {"pooled": ...,
    "tables": ...}}}``, else ``{"pooled": ..., "tables": ...}``. Fractions, unrounded."""
    specs = TABLES.get(dataset or "", ())
    needed = {f.column for s in specs for f in (s.rows, s.cols) if f is not None}
    specs = specs if needed <= set(frame.columns) else ()

    def one(part: pd.DataFrame, asv_part: AsvTrials | None) -> dict[str, Any]:
        scores = part["score"].to_numpy(np.float64)
        is_bona = (part["label"] == "bonafide").to_numpy()
        bona, spoof = np.sort(scores[is_bona]), np.sort(scores[~is_bona])
        pooled = {"eer": None if np.isnan(e := eer_sorted(bona, spoof)) else e, "n_bonafide": int(bona.size),
                  "n_spoof": int(spoof.size)}
        return {"pooled": pooled, "tables": {s.title: condition_table(part, s, asv_part) for s in specs}}

    if "phase" not in frame.columns:
        return one(frame, asv)
    phases = {}
    for phase in PHASES:
        part = frame[frame["phase"] == phase]
        asv_part = AsvTrials(asv.frame[asv.frame["phase"] == phase], asv.source) if asv is not None else None
        phases[phase] = one(part, asv_part) if len(part) else {"pooled": None, "tables": {}, "note": "no trials"}
    return {"phases": phases}


def headline_mask(store, utt_ids: Sequence[str]) -> np.ndarray:
    """bool [N]: the trials of the headline phase (eval) for stores with phases, else all."""
    table = store.utterances
    if "phase" not in table.columns:
        return np.ones(len(utt_ids), bool)
    phase = table.set_index("utt_id")["phase"].reindex(list(utt_ids)).to_numpy()
    return phase == "eval"


def store_tables(store, utt_ids: Sequence[str], scores: np.ndarray, asv_scores: str | None = None,
                 log=print) -> dict[str, Any] | None:
    """:func:`corpus_tables` of scored trials of ``store`` (its dataset's tables, metadata from its
    utterance table); for ASVspoof 2021 LA, the min t-DCF from the keys package's ASV scores
    (``asv_scores`` replaces its score file) when present. None for datasets without tables."""
    dataset = store.attrs.get("dataset", {})
    if dataset.get("name") not in TABLES:
        return None
    meta = store.utterances.set_index("utt_id").reindex(list(utt_ids))
    frame = meta.drop(columns=[c for c in ("score",) if c in meta.columns]).assign(score=np.asarray(scores, float))
    frame = frame.reset_index()
    asv = None
    if dataset.get("name") == "asv21la":
        keys, source = dataset.get("asv_keys"), asv_scores or dataset.get("asv_scores")
        if keys and source and os.path.isfile(keys) and os.path.isfile(source):
            asv = read_asv_2021(keys, source, dataset.get("conditions", {}))
        else:
            log(f"no ASV scores ({keys} and {source}): the LA tables show EER only, no min t-DCF")
    return corpus_tables(dataset.get("name"), frame, asv)

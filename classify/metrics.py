"""Official ASVspoof countermeasure metrics, vectorised.

Conventions (DESIGN.md): higher score = more bona fide; bona fide is the positive class. A trial
is *rejected* (called spoof) when its score is below the threshold, *accepted* otherwise.
Miss = a bona fide trial rejected; false alarm = a spoof trial accepted. All rates and costs are
fractions (not percent).

Each function reproduces the definition in the official evaluation code, to the last bit where
the arithmetic allows it:

* ASVspoof5 ``evaluation-package/calculate_modules.py``: ``compute_det_curve``, ``compute_eer``,
  ``compute_mindcf``, ``compute_actDCF``, ``calculate_CLLR``.
* ASVspoof 2019 ``eval_metrics.py``: ``obtain_asv_error_rates``, ``compute_tDCF`` (legacy t-DCF).

The official minDCF loops over DET points in Python; here it is one vectorised argmin that picks
the same (first) minimum. Inputs are checked: an empty class or a NaN/inf score raises
``ValueError`` instead of the official code's division warnings or ``sys.exit``.

A property of the official DET curve worth knowing: tied scores are ordered bona fide first, so
inside a tie group the curve first rejects the group's bona fide trials. With all scores equal,
the curve passes through (miss 1, false alarm 1), where the two rates are equal, and the official
EER is therefore 1.0, not 0.5. This module keeps that behaviour.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# ASVspoof5 track 1 detection cost parameters (evaluation plan; calculate_metrics.py).
P_SPOOF = 0.05
C_MISS = 1.0
C_FA = 10.0


@dataclass(frozen=True)
class TDCFCostModel:
    """Priors and costs of the ASVspoof 2019 tandem detection cost function (t-DCF).

    ``p_tar + p_non + p_spoof`` must be 1. Costs: ``c_miss_asv`` (ASV rejects a target),
    ``c_fa_asv`` (ASV accepts a non-target), ``c_miss_cm`` (CM rejects bona fide),
    ``c_fa_cm`` (CM accepts a spoof).
    """

    p_spoof: float
    p_tar: float
    p_non: float
    c_miss_asv: float
    c_fa_asv: float
    c_miss_cm: float
    c_fa_cm: float


# ASVspoof 2019 LA cost model, written as the official script computes it (Ptar = 0.9405,
# Pnon = 0.0095 up to float rounding).
ASVSPOOF2019_COST_MODEL = TDCFCostModel(
    p_spoof=0.05,
    p_tar=(1 - 0.05) * 0.99,
    p_non=(1 - 0.05) * 0.01,
    c_miss_asv=1.0,
    c_fa_asv=10.0,
    c_miss_cm=1.0,
    c_fa_cm=10.0,
)


def _as_scores(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a finite, non-empty float64 vector [N]; ValueError naming ``name``."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"no {name} scores: both classes need at least one trial")
    n_bad = int(np.count_nonzero(~np.isfinite(arr)))
    if n_bad:
        raise ValueError(f"{name} scores contain {n_bad} NaN or infinite value(s)")
    return arr


def compute_det_curve(
    bona_scores: Any, spoof_scores: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET curve exactly as the official ``compute_det_curve``.

    Args:
        bona_scores: [Nb] bona fide scores.
        spoof_scores: [Ns] spoof scores.

    Returns:
        ``(frr, far, thresholds)``, each [Nb + Ns + 1]. Point 0 accepts everything
        (frr 0, far 1, threshold = lowest score - 0.001); point k rejects the first k trials of
        the stable (mergesort) ascending order of the concatenation ``[bona, spoof]``, so tied
        bona fide trials are rejected before tied spoof trials. ``thresholds[k]`` is the k-th
        sorted score.
    """
    bona = _as_scores(bona_scores, "bona fide")
    spoof = _as_scores(spoof_scores, "spoof")
    all_scores = np.concatenate((bona, spoof))
    labels = np.concatenate((np.ones(bona.size), np.zeros(spoof.size)))
    order = np.argsort(all_scores, kind="mergesort")
    bona_rejected = np.cumsum(labels[order])
    spoof_accepted = spoof.size - (np.arange(1, all_scores.size + 1) - bona_rejected)
    frr = np.concatenate(([0.0], bona_rejected / bona.size))
    far = np.concatenate(([1.0], spoof_accepted / spoof.size))
    sorted_scores = all_scores[order]
    thresholds = np.concatenate(([sorted_scores[0] - 0.001], sorted_scores))
    return frr, far, thresholds


def eer_from_det(frr: np.ndarray, far: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """EER at the first DET point where |frr - far| is smallest: (mean of the two, threshold)."""
    idx = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[idx], far[idx]))), float(thresholds[idx])


def mindcf_from_det(
    frr: np.ndarray,
    far: np.ndarray,
    thresholds: np.ndarray,
    p_spoof: float,
    c_miss: float,
    c_fa: float,
) -> tuple[float, float]:
    """Normalised minimum DCF over DET points, same arithmetic as the official loop."""
    p_target = 1 - p_spoof
    c_det = c_miss * frr * p_target + c_fa * far * (1 - p_target)
    idx = int(np.argmin(c_det))  # first minimum, as the official strict '<' loop
    c_default = min(c_miss * p_target, c_fa * (1 - p_target))
    return float(c_det[idx] / c_default), float(thresholds[idx])


def compute_eer(bona_scores: Any, spoof_scores: Any) -> tuple[float, float]:
    """Equal error rate as the official ``compute_eer``.

    Args:
        bona_scores: [Nb] bona fide scores.
        spoof_scores: [Ns] spoof scores.

    Returns:
        ``(eer, threshold)``: at the first DET point minimising |frr - far|, the mean of frr and
        far there, and that point's threshold.
    """
    return eer_from_det(*compute_det_curve(bona_scores, spoof_scores))


def compute_mindcf(bona_scores: Any, spoof_scores: Any, p_spoof: float = P_SPOOF, c_miss: float = C_MISS,
                   c_fa: float = C_FA) -> tuple[float, float]:
    """Normalised minimum detection cost (ASVspoof5 primary metric), official definition.

    Over all DET points, DCF = c_miss * (1 - p_spoof) * frr + c_fa * p_spoof * far; the minimum
    (first one on ties) is divided by the cost of the best trivial system,
    min(c_miss * (1 - p_spoof), c_fa * p_spoof).

    Returns:
        ``(min_dcf, threshold)`` with the threshold of the minimising DET point.
    """
    frr, far, thresholds = compute_det_curve(bona_scores, spoof_scores)
    return mindcf_from_det(frr, far, thresholds, p_spoof, c_miss, c_fa)


def actdcf_threshold(p_spoof: float = P_SPOOF, c_miss: float = C_MISS, c_fa: float = C_FA) -> float:
    """Bayes decision threshold for log-likelihood-ratio scores: -ln(c_miss (1 - p_spoof) / (c_fa p_spoof))."""
    return -math.log(c_miss * (1 - p_spoof) / (c_fa * p_spoof))


def compute_actdcf(bona_scores: Any, spoof_scores: Any, p_spoof: float = P_SPOOF, c_miss: float = C_MISS,
                   c_fa: float = C_FA) -> tuple[float, float]:
    """Normalised actual DCF, official ``compute_actDCF``: scores are read as natural-log LLRs.

    At the fixed threshold t = :func:`actdcf_threshold` (about -0.642 with the defaults),
    Pmiss = share of bona fide with score < t, Pfa = share of spoof with score >= t,
    DCF = c_miss * (1 - p_spoof) * Pmiss + c_fa * p_spoof * Pfa, divided by
    min(c_fa * p_spoof, c_miss * (1 - p_spoof)).

    Returns:
        ``(act_dcf, threshold)``.
    """
    bona = _as_scores(bona_scores, "bona fide")
    spoof = _as_scores(spoof_scores, "spoof")
    threshold = actdcf_threshold(p_spoof, c_miss, c_fa)
    rate_miss = np.sum(bona < threshold) / bona.size
    rate_fa = np.sum(spoof >= threshold) / spoof.size
    dcf = c_miss * (1 - p_spoof) * rate_miss + c_fa * p_spoof * rate_fa
    return float(dcf / min(c_fa * p_spoof, c_miss * (1 - p_spoof))), threshold


def compute_cllr(bona_scores: Any, spoof_scores: Any) -> float:
    """Log-likelihood-ratio cost in bits, official ``calculate_CLLR``.

    Cllr = (mean(log(1 + e^-s_bona)) + mean(log(1 + e^s_spoof))) / (2 ln 2), with scores read
    as natural-log LLRs. Computed as ``np.logaddexp(0, x)`` so large scores cannot overflow.
    """
    bona = _as_scores(bona_scores, "bona fide")
    spoof = _as_scores(spoof_scores, "spoof")
    total = np.mean(np.logaddexp(0.0, -bona)) + np.mean(np.logaddexp(0.0, spoof))
    return float(0.5 * total / np.log(2))


def asv_error_rates(
    asv_scores_tar: Any, asv_scores_non: Any, asv_scores_spoof: Any
) -> tuple[float, float, float]:
    """ASV error rates at the ASV's own EER threshold, as the official 2019 t-DCF script.

    The threshold t is :func:`compute_eer` of target vs non-target ASV scores. Then
    Pfa_asv = share of non-targets with score >= t, Pmiss_asv = share of targets < t,
    Pmiss_spoof_asv = share of spoofs < t.

    Args:
        asv_scores_tar: [Nt] ASV scores of target (bona fide, same speaker) trials.
        asv_scores_non: [Nn] non-target trials.
        asv_scores_spoof: [Nsp] spoof trials.

    Returns:
        ``(pfa_asv, pmiss_asv, pmiss_spoof_asv)``.
    """
    tar = _as_scores(asv_scores_tar, "ASV target")
    non = _as_scores(asv_scores_non, "ASV non-target")
    spoof = _as_scores(asv_scores_spoof, "ASV spoof")
    _, threshold = compute_eer(tar, non)
    pfa_asv = np.sum(non >= threshold) / non.size
    pmiss_asv = np.sum(tar < threshold) / tar.size
    pmiss_spoof_asv = np.sum(spoof < threshold) / spoof.size
    return float(pfa_asv), float(pmiss_asv), float(pmiss_spoof_asv)


def compute_tdcf_legacy(
    bona_cm: Any,
    spoof_cm: Any,
    pfa_asv: float,
    pmiss_asv: float,
    pmiss_spoof_asv: float,
    cost_model: TDCFCostModel = ASVSPOOF2019_COST_MODEL,
) -> tuple[float, float]:
    """Normalised minimum t-DCF of ASVspoof 2019 (official ``compute_tDCF`` + argmin).

    C1 = p_tar * (c_miss_cm - c_miss_asv * pmiss_asv) - p_non * c_fa_asv * pfa_asv,
    C2 = c_fa_cm * p_spoof * (1 - pmiss_spoof_asv); over the CM DET points,
    t-DCF_norm = (C1 * Pmiss_cm + C2 * Pfa_cm) / min(C1, C2); the minimum is returned.

    The official sanity checks raise ``ValueError`` here: priors negative or not summing to 1,
    NaN/inf CM scores, fewer than 3 distinct CM scores (decisions, not scores), C1 or C2
    negative. Negative costs only warn, as in the official code. C1 or C2 equal to 0 (the
    official code would divide by zero) also raises.

    Args:
        bona_cm: [Nb] CM scores of bona fide trials.
        spoof_cm: [Ns] CM scores of spoof trials.
        pfa_asv, pmiss_asv, pmiss_spoof_asv: from :func:`asv_error_rates`.
        cost_model: defaults to the ASVspoof 2019 LA model.

    Returns:
        ``(min_tdcf, cm_threshold)``.
    """
    cm = cost_model
    if min(cm.c_fa_asv, cm.c_miss_asv, cm.c_fa_cm, cm.c_miss_cm) < 0:
        warnings.warn("t-DCF: usually the cost values should be positive", stacklevel=2)
    if (
        min(cm.p_tar, cm.p_non, cm.p_spoof) < 0
        or abs(cm.p_tar + cm.p_non + cm.p_spoof - 1) > 1e-10
    ):
        raise ValueError("t-DCF: prior probabilities must be non-negative and sum to one")
    bona = _as_scores(bona_cm, "bona fide CM")
    spoof = _as_scores(spoof_cm, "spoof CM")
    if np.unique(np.concatenate((bona, spoof))).size < 3:
        raise ValueError(
            "t-DCF: CM scores take fewer than 3 distinct values; provide soft scores, "
            "not binary decisions"
        )
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bona, spoof)
    c1 = cm.p_tar * (cm.c_miss_cm - cm.c_miss_asv * pmiss_asv) - cm.p_non * cm.c_fa_asv * pfa_asv
    c2 = cm.c_fa_cm * cm.p_spoof * (1 - pmiss_spoof_asv)
    if c1 < 0 or c2 < 0:
        raise ValueError(
            f"t-DCF: negative weights C1={c1:.6g}, C2={c2:.6g}; check the ASV error rates "
            f"(Pfa_asv={pfa_asv:.6g}, Pmiss_asv={pmiss_asv:.6g}, "
            f"Pmiss_spoof_asv={pmiss_spoof_asv:.6g})"
        )
    if c1 == 0 or c2 == 0:
        raise ValueError(
            f"t-DCF undefined: C1={c1:.6g}, C2={c2:.6g} (normalisation by zero); check the "
            "ASV error rates"
        )
    tdcf_norm = (c1 * pmiss_cm + c2 * pfa_cm) / np.minimum(c1, c2)
    idx = int(np.argmin(tdcf_norm))
    return float(tdcf_norm[idx]), float(thresholds[idx])


def min_tdcf_with_asv(bona_cm: Any, spoof_cm: Any, asv_target: Any, asv_nontarget: Any, asv_spoof: Any,
                      cost_model: TDCFCostModel = ASVSPOOF2019_COST_MODEL) -> dict[str, float]:
    """Min t-DCF of CM scores with the ASV system's error rates at its own EER threshold (the
    official ASVspoof 2019 procedure): ``{"min_tdcf", "pfa_asv", "pmiss_asv", "pmiss_spoof_asv"}``.
    ValueError (from the checks of either step) when the inputs cannot give one."""
    pfa, pmiss, pmiss_spoof = asv_error_rates(asv_target, asv_nontarget, asv_spoof)
    min_tdcf, _ = compute_tdcf_legacy(bona_cm, spoof_cm, pfa, pmiss, pmiss_spoof, cost_model)
    return {"min_tdcf": min_tdcf, "pfa_asv": pfa, "pmiss_asv": pmiss, "pmiss_spoof_asv": pmiss_spoof}


def _class_metrics(
    bona: np.ndarray, spoof: np.ndarray, p_spoof: float, c_miss: float, c_fa: float
) -> dict[str, float | int]:
    """EER, minDCF, actDCF, Cllr and class counts of one bona fide / spoof pair of score sets."""
    frr, far, thresholds = compute_det_curve(bona, spoof)
    eer, eer_threshold = eer_from_det(frr, far, thresholds)
    min_dcf, _ = mindcf_from_det(frr, far, thresholds, p_spoof, c_miss, c_fa)
    act_dcf, _ = compute_actdcf(bona, spoof, p_spoof, c_miss, c_fa)
    return {
        "eer": eer,
        "eer_threshold": eer_threshold,
        "min_dcf": min_dcf,
        "act_dcf": act_dcf,
        "cllr": compute_cllr(bona, spoof),
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
    }


def _group_metrics(
    bona: np.ndarray, spoof: np.ndarray, p_spoof: float, c_miss: float, c_fa: float
) -> dict[str, float | int | None]:
    """:func:`_class_metrics` of a subgroup, or counts with ``None`` metrics if a class is empty."""
    if bona.size and spoof.size:
        return dict(_class_metrics(bona, spoof, p_spoof, c_miss, c_fa))
    return {
        "eer": None,
        "eer_threshold": None,
        "min_dcf": None,
        "act_dcf": None,
        "cllr": None,
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
    }


def metrics_table(
    scores: Any,
    is_bonafide: Any,
    attacks: Sequence[str] | None = None,
    codecs: Sequence[str] | None = None,
    p_spoof: float = P_SPOOF,
    c_miss: float = C_MISS,
    c_fa: float = C_FA,
) -> dict[str, Any]:
    """All track-1 metrics of a scored trial list, pooled and per condition.

    Args:
        scores: [N] CM scores, higher = more bona fide.
        is_bonafide: [N] bool (or 0/1): True for bona fide trials, False for spoof.
        attacks: optional [N] attack label per trial (values on bona fide trials are ignored).
            Per attack, as the official ASVspoof5 full evaluation: ALL bona fide trials against
            the spoof trials of that attack.
        codecs: optional [N] codec condition per trial (e.g. ASVspoof5 CODEC, '-' = uncoded).
            Per condition: bona fide and spoof trials of that condition only.
        p_spoof, c_miss, c_fa: DCF parameters (ASVspoof5 defaults).

    Returns:
        ``{"eer", "eer_threshold", "min_dcf", "act_dcf", "cllr", "n_bonafide", "n_spoof",
        "per_attack", "per_codec"}``. Metrics are fractions (EER 0.05 = 5 %), Cllr in bits.
        ``per_attack`` / ``per_codec`` map each label (sorted) to a dict with the same seven
        first keys; they are empty dicts when ``attacks`` / ``codecs`` is None. A condition
        lacking one class has ``None`` metrics and its counts.
    """
    score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    bona_mask = np.asarray(is_bonafide, dtype=bool).reshape(-1)
    if bona_mask.shape != score_arr.shape:
        raise ValueError(f"{score_arr.size} scores but {bona_mask.size} labels")
    bona = score_arr[bona_mask]
    spoof = score_arr[~bona_mask]
    result: dict[str, Any] = dict(_class_metrics(bona, spoof, p_spoof, c_miss, c_fa))
    result["per_attack"] = {}
    result["per_codec"] = {}
    if attacks is not None:
        attack_arr = np.asarray(attacks, dtype=object).reshape(-1)
        if attack_arr.shape != score_arr.shape:
            raise ValueError(f"{score_arr.size} scores but {attack_arr.size} attack labels")
        for attack in sorted(set(attack_arr[~bona_mask].tolist())):
            spoof_of_attack = score_arr[~bona_mask & (attack_arr == attack)]
            result["per_attack"][attack] = _group_metrics(bona, spoof_of_attack, p_spoof, c_miss, c_fa)
    if codecs is not None:
        codec_arr = np.asarray(codecs, dtype=object).reshape(-1)
        if codec_arr.shape != score_arr.shape:
            raise ValueError(f"{score_arr.size} scores but {codec_arr.size} codec labels")
        for codec in sorted(set(codec_arr.tolist())):
            in_codec = codec_arr == codec
            result["per_codec"][codec] = _group_metrics(
                score_arr[in_codec & bona_mask], score_arr[in_codec & ~bona_mask], p_spoof, c_miss, c_fa
            )
    return result

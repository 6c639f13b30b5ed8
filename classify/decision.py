"""Decisions a person can act on: the probability of bona fide at a stated prior, and a decision at a
stated operating point, both from the calibrated LLR (`classify.calibration`).

Probability: with LLR = ln p(x | bona fide) / p(x | spoof) and a prior P(bona fide) = ``prior``
(default :data:`PRIOR`), the posterior is ``sigmoid(LLR + ln(prior / (1 - prior)))``.

Operating points (``--threshold``; every one a threshold on the LLR, bona fide when LLR >= it):

    eer        the dev EER threshold (the calibration's, as before)
    bayes      the Bayes threshold for the ASVspoof5 costs (as before)
    prior      the Bayes threshold at the stated prior with equal costs: bona fide when the
               probability at that prior is >= 0.5 (LLR >= ln((1 - prior) / prior))
    mindcf     the dev threshold of the minimum normalised DCF (ASVspoof5 costs)
    far:R      the lowest dev threshold whose false-accept rate (spoofs accepted) is <= R, e.g. far:0.01
    a number   a raw-score threshold (as before; no LLR needed)

``mindcf`` and ``far:R`` need the dev LLRs' distribution, which :func:`operating_points` records
at the end of training (``calibration["operating_points"]``: the min DCF threshold and 1001
quantiles of each class's dev LLRs); a model trained before has no such record and gets no
decision, with the reason stated (as a model without calibration does for ``eer``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from classify.metrics import compute_mindcf

PRIOR = 0.5
"""Default prior probability of bona fide (no preference)."""
QUANTILES = 1001
"""Quantiles of each class's dev LLRs kept with the model (false-accept rates to 0.1 %)."""
NAMED = ("eer", "bayes", "prior", "mindcf")


def check_prior(prior: float) -> float:
    """``prior`` if 0 < prior < 1, else ValueError."""
    if not 0.0 < float(prior) < 1.0:
        raise ValueError(f"prior must be a probability strictly between 0 and 1, got {prior}")
    return float(prior)


def probability(llr: float | None, prior: float = PRIOR) -> float | None:
    """P(bona fide | x) at ``prior`` from the LLR (None without one)."""
    if llr is None:
        return None
    z = float(llr) + math.log(prior / (1.0 - prior))
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def operating_points(llr: np.ndarray, is_bonafide: np.ndarray) -> dict[str, Any]:
    """The record of the module docstring from dev LLRs [N] and labels [N]."""
    bona, spoof = llr[is_bonafide], llr[~is_bonafide]
    min_dcf, threshold = compute_mindcf(bona, spoof)
    grid = np.linspace(0.0, 1.0, QUANTILES)
    return {"mindcf_llr": float(threshold), "min_dcf": float(min_dcf),
            "bonafide_llr_quantiles": np.quantile(bona, grid).tolist(),
            "spoof_llr_quantiles": np.quantile(spoof, grid).tolist(),
            "n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}


def rates_at(threshold: float, points: dict[str, Any]) -> tuple[float, float]:
    """(miss rate, false-accept rate) on dev at an LLR threshold, from the recorded quantiles."""
    grid = np.linspace(0.0, 1.0, QUANTILES)
    miss = float(np.interp(threshold, points["bonafide_llr_quantiles"], grid, left=0.0, right=1.0))
    fa = 1.0 - float(np.interp(threshold, points["spoof_llr_quantiles"], grid, left=0.0, right=1.0))
    return miss, fa


def far_threshold(target: float, points: dict[str, Any]) -> float:
    """The LLR threshold whose dev false-accept rate is ``target`` (interpolated between quantiles;
    above every spoof for 0)."""
    spoof = np.asarray(points["spoof_llr_quantiles"])
    if target <= 0:
        return float(np.nextafter(spoof[-1], np.inf))
    return float(np.quantile(spoof, 1.0 - target, method="linear")) if target < 1 else float(spoof[0])


def parse(spec: str) -> tuple[str, float | None]:
    """(kind, rate) of a named operating point: ("far", R) for far:R, (name, None) for the others;
    ValueError for anything else (numbers are handled by the caller)."""
    if spec in NAMED:
        return spec, None
    if spec.startswith("far:"):
        try:
            rate = float(spec[4:])
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"threshold {spec!r}: far:R needs a false-accept rate 0 <= R < 1, e.g. far:0.01")
        return "far", rate
    raise ValueError(f"threshold {spec!r}: use eer, bayes or a number (a raw-score threshold), or prior, mindcf, far:R")


def llr_threshold(spec: str, calibration: dict[str, Any] | None, prior: float = PRIOR) -> tuple[float | None, str]:
    """(LLR threshold or None, description) of a named operating point ``spec`` other than eer and
    bayes (those are `classify.detector.make_threshold`'s)."""
    kind, rate = parse(spec)
    if kind == "prior":
        value = math.log((1.0 - prior) / prior)
        return value, (f"LLR >= {value:.4g}: the Bayes threshold at prior P(bona fide) = {prior:g} with equal costs "
                       "(probability of bona fide >= 0.5)")
    points = (calibration or {}).get("operating_points")
    if not points:
        why = "the model's dev calibration" if not calibration else "the dev LLR distribution saved at the end of training"
        return None, (f"none: --threshold {spec} needs {why}, which this model lacks (trained before it was saved, "
                      "or last.pt); use eer, bayes, prior or a raw-score threshold")
    if kind == "mindcf":
        value = points["mindcf_llr"]
        miss, fa = rates_at(value, points)
        return value, (f"LLR >= {value:.4g}: the dev minimum-DCF threshold (min DCF {points['min_dcf']:.4f}; dev "
                       f"miss {100 * miss:.2f} %, false accept {100 * fa:.2f} %)")
    value = far_threshold(rate, points)
    miss, fa = rates_at(value, points)
    return value, (f"LLR >= {value:.4g}: the dev threshold for a false-accept rate of {100 * rate:g} % (dev false "
                   f"accept {100 * fa:.2f} %, miss {100 * miss:.2f} %; {points['n_spoof']} dev spoofs)")


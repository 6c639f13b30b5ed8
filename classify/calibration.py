"""A model's calibration and decision thresholds: fitted on the dev split once training ends, saved
with the run (``best.pt`` and ``calibration.json``), so that scoring an eval-only store, or audio
files, needs no dev data.

The record (``checkpoint["calibration"]``)::

    calibration        the `classify.evaluate.fit_calibration` record (coef a, intercept b,
                       log_prior_odds; LLR = a s + b - log_prior_odds), plus "dev_split", "store"
    thresholds         {"eer_score": dev EER threshold of the raw score s,
                        "eer_llr":   dev EER threshold of the LLR,
                        "bayes_llr": the Bayes threshold of the LLR for the ASVspoof5 costs,
                        "dev_eer":   the dev EER}
    operating_points   the min DCF threshold and the dev LLRs' quantiles per class
                       (`classify.decision.operating_points`: the mindcf and far:R decisions)
    codec_weights      label of the codec weights that made the dev features

Decision rule everywhere: bona fide when the value is >= the threshold (as the official actDCF).
An EER threshold is placed halfway between the last rejected and the first accepted dev score at
the official DET curve's EER point, so that this rule reproduces that point's miss and false-alarm
rates on the dev scores exactly (unless the two scores are tied).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from classify.decision import operating_points
from classify.evaluate import apply_calibration, fit_calibration
from classify.metrics import actdcf_threshold, compute_det_curve

CALIBRATION_FILE = "calibration.json"


def eer_threshold(bona: np.ndarray, spoof: np.ndarray) -> tuple[float, float]:
    """(EER, threshold t) on scores [Nb], [Ns]: at the official DET curve's EER point (the first
    point minimising |miss - false alarm|), t lies halfway between the highest rejected and the
    lowest accepted score, so that ``score >= t`` accepts exactly that point's trials."""
    frr, far, _ = compute_det_curve(bona, spoof)
    idx = int(np.argmin(np.abs(frr - far)))
    ordered = np.sort(np.concatenate((bona, spoof)), kind="mergesort")
    if idx == 0:  # accept everything
        threshold = float(ordered[0]) - 1.0
    elif idx == ordered.size:  # reject everything
        threshold = float(ordered[-1]) + 1.0
    else:
        threshold = 0.5 * (float(ordered[idx - 1]) + float(ordered[idx]))
    return float(np.mean((frr[idx], far[idx]))), threshold


def model_calibration(scores: np.ndarray, is_bonafide: np.ndarray, dev_split: str, store_url: str,
                      codec_label: str, dev_view: str = "") -> dict[str, Any]:
    """The calibration record of a model whose dev scores [N] (labels ``is_bonafide`` [N]) are
    given: see the module docstring. ``dev_view``: the augmented view of the dev split the scores
    came from ("": the clean split; then the record has no ``dev_view``)."""
    calibration = {**fit_calibration(scores, is_bonafide), "dev_split": dev_split, "store": store_url,
                   **({"dev_view": dev_view} if dev_view else {})}
    llr = apply_calibration(calibration, scores)
    dev_eer, eer_score = eer_threshold(scores[is_bonafide], scores[~is_bonafide])
    _, eer_llr = eer_threshold(llr[is_bonafide], llr[~is_bonafide])
    return {
        "calibration": calibration,
        "thresholds": {"eer_score": eer_score, "eer_llr": eer_llr, "bayes_llr": actdcf_threshold(),
                       "dev_eer": dev_eer},
        "operating_points": operating_points(llr, is_bonafide),
        "codec_weights": codec_label,
    }

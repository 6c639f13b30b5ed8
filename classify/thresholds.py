"""Decisions: the threshold a Detector's scores are judged by (`pipeline score --threshold`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from classify.decision import PRIOR, check_prior, llr_threshold, parse


@dataclass(frozen=True)
class Threshold:
    """The decision threshold: bona fide when the value ``on`` ("llr" or "score") is >= ``value``;
    ``value`` None: no decision (the model lacks the calibration the threshold needs)."""

    kind: str
    value: float | None
    on: str
    description: str

    def decide(self, score: float, llr: float | None) -> str:
        value = llr if self.on == "llr" else score
        if self.value is None or value is None:
            return ""
        return "bonafide" if value >= self.value else "spoof"


def make_threshold(spec: str | float, calibration: dict[str, Any] | None, prior: float = PRIOR) -> Threshold:
    """``eer``: the dev EER threshold of the calibrated score (LLR); ``bayes``: the Bayes threshold
    of the LLR for the ASVspoof5 costs; a number: a threshold of the raw score; ``prior``,
    ``mindcf``, ``far:R``: the operating points of `classify.decision` (``prior``: P(bona fide)).
    The named ones come from the model's calibration record: a model without one gets no decision
    (a Threshold whose value is None, whose description says why). ValueError for anything else."""
    if isinstance(spec, str) and (spec in ("prior", "mindcf") or spec.startswith("far:")):
        value, description = llr_threshold(spec, calibration, check_prior(prior))
        return Threshold(spec, value, "llr", description)
    if not isinstance(spec, str) or spec not in ("eer", "bayes"):
        try:
            value = float(spec)
        except (TypeError, ValueError):
            parse(str(spec))  # the error names every choice
            raise
        return Threshold("value", value, "score", f"raw score >= {value:g}")
    thresholds = (calibration or {}).get("thresholds")
    if not thresholds:
        return Threshold(spec, None, "llr", f"none: --threshold {spec} needs the model's dev calibration, which "
                                            "this model lacks (last.pt, or trained before calibrations were saved); "
                                            "give a raw-score threshold instead")
    if spec == "eer":
        return Threshold("eer", thresholds["eer_llr"], "llr",
                         f"LLR >= {thresholds['eer_llr']:.4g}: the dev EER threshold of the calibrated score "
                         f"(raw score {thresholds['eer_score']:.4g}; dev EER {100 * thresholds['dev_eer']:.2f} %)")
    return Threshold("bayes", thresholds["bayes_llr"], "llr",
                     f"LLR >= {thresholds['bayes_llr']:.4g}: the Bayes threshold -ln(Cmiss (1 - Pspoof) / "
                     "(Cfa Pspoof)) for Pspoof 0.05, Cmiss 1, Cfa 10")

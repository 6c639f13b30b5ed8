"""One recording's verdict as JSON: what `pipeline score --segments` writes per file and `pipeline
serve` answers, with the same keys in both.

    path          the file (the CLI) or the upload's name (the service)
    llr           the calibrated LLR (None without calibration)
    score         the raw logit (higher = more bona fide)
    probability   P(bona fide) at ``prior`` (`classify.decision`)
    prior         the prior it is computed at
    decision      bonafide / spoof at the operating point ("" without one)
    operating_point  {"name", "threshold", "on", "description"}
    segments      the timeline (`classify.timeline`): start, end, score, llr, probability, decision
    timeline      {"window_seconds", "hop_seconds", "aggregate"}: how segments were cut, and the
                  rule that makes the file's score
    ood           the out-of-distribution check (`classify.ood`): {score, threshold, flagged, ...},
                  or None with ``ood_reason`` saying why
    model         what made it: variant, head, codec and SSL weights' labels, ``untrained`` (True when
                  either is UNTRAINED: then no score is evidence about real speech), ``warning``
    duration      seconds of audio
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classify.decision import probability
from classify.score_rows import ScoreRow
from classify.timeline import Timeline

UNTRAINED_WARNING = ("UNTRAINED weights: this model's codec or SSL weights were not trained on speech; its scores "
                     "show that the pipeline runs, they are no evidence about this recording")


def model_summary(detector: Any) -> dict[str, Any]:
    """The model's labels for every verdict (no server paths: the model file's name only)."""
    untrained = "UNTRAINED" in detector.codec_label or "UNTRAINED" in (detector.ssl_label or "")
    return {"name": Path(str(detector.model_file.path)).name, "kind": detector.model_file.kind,
            "variant": detector.config.variant, "head": detector.config.head,
            "codec_weights": detector.codec_label, "ssl_weights": detector.ssl_label or None,
            "untrained": untrained, "warning": UNTRAINED_WARNING if untrained else None,
            "calibrated": detector.calibration is not None}


def verdict(detector: Any, row: ScoreRow, timeline: Timeline | None, ood: dict[str, Any] | None = None,
            ood_reason: str = "", name: str | None = None) -> dict[str, Any]:
    """The JSON of the module docstring."""
    threshold = detector.threshold
    prior = detector.prior

    def decide(score: float, llr: float | None) -> str:
        return threshold.decide(score, llr)

    segments = []
    if timeline is not None:
        for segment in timeline.rows(decide):
            segment["probability"] = probability(segment["llr"], prior)
            segments.append(segment)
    return {
        "path": name if name is not None else row.path,
        "llr": row.llr, "score": row.score, "probability": probability(row.llr, prior), "prior": prior,
        "decision": row.decision,
        "operating_point": {"name": threshold.kind, "threshold": threshold.value, "on": threshold.on,
                            "description": threshold.description},
        "segments": segments,
        "timeline": None if timeline is None else {"window_seconds": timeline.window_seconds,
                                                   "hop_seconds": timeline.hop_seconds,
                                                   "aggregate": timeline.aggregate},
        "ood": ood, **({"ood_reason": ood_reason} if ood is None and ood_reason else {}),
        "model": model_summary(detector),
        "duration": row.duration,
        **({"error": row.error} if row.error else {}),
    }

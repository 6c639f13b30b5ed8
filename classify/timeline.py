"""Where in a long recording the model objects: a timeline of window scores beside the file's score.

A recording is encoded once (the Detector's front end, as every file is); its frames are then cut
into windows of ``window_seconds`` every ``hop_seconds`` (defaults :data:`WINDOW_SECONDS` and
:data:`HOP_SECONDS`; the last window ends at the recording's end; a recording no longer than one
window is one segment), and each window's frames are scored alone, as a file of that length is
scored (`classify.detector.Detector.score_features`). The windows are cut from the whole
recording's codes, not encoded alone: near a window's edges the codec saw the neighbouring audio.

The aggregate rule (stated in every output, :func:`aggregate_rule`): the file's score, LLR and
decision are the model's score of the whole recording, exactly as `pipeline score` and `evaluate`
score it (the mean logit over evenly spread windows of the model's ``max_eval_seconds`` when the
recording is longer); the segments do not change it. They show where the score comes from: a
bona fide recording with a spoofed stretch has low segment scores over the stretch.

Models of the SSL variants are cut in whole 40 ms pairs (2 SSL frames and their 3 codec frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classify.align import CODEC_PER_PAIR, PAIR_SECONDS, SSL_PER_PAIR
from classify.explain import window_starts
from classify.fusion import FusedDetector
from classify.score_rows import ScoreRow

WINDOW_SECONDS = 4.0
"""Default segment length (the length of ASVspoof's utterances, which the models are trained on)."""
HOP_SECONDS = 2.0
"""Default distance between segment starts (half a window: every moment is in two segments)."""


@dataclass(frozen=True)
class Segment:
    """One window: ``start``/``end`` in seconds, its raw ``score`` and calibrated ``llr`` (None
    without calibration)."""

    start: float
    end: float
    score: float
    llr: float | None


@dataclass(frozen=True)
class Timeline:
    """A recording's segments, the window and hop they were cut with (seconds, as cut in frames),
    and the aggregate rule."""

    window_seconds: float
    hop_seconds: float
    segments: list[Segment]
    aggregate: str

    def rows(self, decide: Any = None) -> list[dict[str, Any]]:
        """The segments as JSON-ready dicts; ``decide(score, llr) -> str`` adds each one's decision."""
        out = []
        for s in self.segments:
            row = {"start": round(s.start, 4), "end": round(s.end, 4), "score": s.score, "llr": s.llr}
            if decide is not None:
                row["decision"] = decide(s.score, s.llr)
            out.append(row)
        return out


def check_settings(window_seconds: float, hop_seconds: float) -> None:
    """ValueError unless both are > 0."""
    if not window_seconds > 0 or not hop_seconds > 0:
        raise ValueError(f"segment window and hop must be > 0 seconds, got {window_seconds} and {hop_seconds}")


def aggregate_rule(detector: Any) -> str:
    """The rule of the module docstring, with the model's own numbers."""
    seconds = detector.config.max_eval_seconds
    return (f"the file's score, LLR and decision are the model's score of the whole recording, as evaluate scores it "
            f"(the mean logit over evenly spread {seconds:g} s windows when it is longer than {seconds:g} s); the "
            "segments are windows cut from the same encoding and scored alone, shown beside it, not averaged into it")


def cut(detector: Any, features: Any, window_seconds: float, hop_seconds: float) -> tuple[list[tuple[float, float]], list[Any]]:
    """The windows of one recording's features: ([(start, end) seconds], [Features of each window])."""
    check_settings(window_seconds, hop_seconds)
    fused = isinstance(detector.model, FusedDetector)
    unit = PAIR_SECONDS if fused else 1.0 / detector.codec.frame_rate
    n = features.ssl.shape[0] // SSL_PER_PAIR if fused else features.codes.shape[0]
    window = min(n, max(1, round(window_seconds / unit)))
    hop = max(1, round(hop_seconds / unit))
    spans, pieces = [], []
    per = CODEC_PER_PAIR if fused else 1

    def part(array: np.ndarray | None, first: int, last: int, per: int) -> np.ndarray | None:
        return None if array is None else array[first * per : last * per]

    for first in window_starts(n, window, hop).tolist():
        last = first + window
        pieces.append(dataclasses.replace(features, codes=part(features.codes, first, last, per),
                                          latent=part(features.latent, first, last, per),
                                          ssl=part(features.ssl, first, last, SSL_PER_PAIR) if fused else features.ssl,
                                          duration=window * unit))
        spans.append((first * unit, last * unit))
    return spans, pieces


def score_with_timeline(detector: Any, features: Any, window_seconds: float = WINDOW_SECONDS,
                        hop_seconds: float = HOP_SECONDS) -> tuple[float, Timeline]:
    """(the whole recording's logit, its :class:`Timeline`) from its features, in one scoring pass."""
    spans, pieces = cut(detector, features, window_seconds, hop_seconds)
    logits = detector.score_features([features, *pieces])
    segments = [Segment(start, end, float(logit), detector.llr(float(logit)))
                for (start, end), logit in zip(spans, logits[1:].tolist())]
    width = spans[0][1] - spans[0][0]
    hop = spans[1][0] - spans[0][0] if len(spans) > 1 else hop_seconds
    return float(logits[0]), Timeline(width, hop, segments, aggregate_rule(detector))


def score_waveform(detector: Any, waveform: Any, sample_rate: int, window_seconds: float = WINDOW_SECONDS,
                   hop_seconds: float = HOP_SECONDS) -> tuple[ScoreRow, Timeline, Any]:
    """A waveform's row (as :meth:`Detector.score` scores it), its timeline and its features."""
    features, _ = detector._encode_waveform(waveform, sample_rate)
    score, timeline = score_with_timeline(detector, features, window_seconds, hop_seconds)
    return detector._row("<waveform>", score, features.duration), timeline, features


def iter_timelines(detector: Any, paths: Iterable[str | Path], window_seconds: float = WINDOW_SECONDS,
                   hop_seconds: float = HOP_SECONDS) -> Iterator[tuple[ScoreRow, Timeline | None, Any]]:
    """(row, timeline, features) of every file in order, one file at a time (its row is what
    :meth:`Detector.score_files` gives it with one file per encoder batch); a file that cannot be
    scored gets its error row and no timeline or features."""
    check_settings(window_seconds, hop_seconds)
    for path in paths:
        for batch in detector.front_end.encode_files([str(path)], detector.batch_seconds, detector.eval_crop):
            for _, f in batch:
                error = f.error or detector._too_short(f)
                if error:
                    yield ScoreRow(f.path, duration=f.duration, error=error), None, None
                    continue
                score, timeline = score_with_timeline(detector, f, window_seconds, hop_seconds)
                yield detector._row(f.path, score, f.duration), timeline, f

"""Why a model scored an utterance as it did, by occlusion (`Detector.explain`, `pipeline score --explain`).

Every explanation reports the score change ``contribution = score - occluded score`` (positive: that
part pushed the score towards bona fide), and the score is the Detector's own (`Detector.score_features`,
evaluate's scoring, under the same autocast), so an explanation's score is `Detector.score`'s.

- per quantizer level q (every variant with levels): every frame's level-q embedding C_q[code_q[t]] is
  replaced by the level's mean codeword mean_k C_q[k] (in the model's own, possibly standardised,
  tables): the model is copied with level q's table rows set to their mean and scored the same way;
- over time, codec variants: the frames of a sliding window (``window`` frames every ``hop`` frames)
  get every level replaced by its mean codeword, computed from the fused features
  h[t] = sum_q alpha_q * T_q[code_q[t]] (alpha and the tables T of the model's `HierarchyWeighting`),
  and only the segments a window overlaps (`classify.data.eval_segments`: the whole utterance, or the
  mean logit over evenly spread windows of a longer one) are scored again. For the variants that read a
  continuous stream (`latent`, `energy`: no levels) the per-level contributions are empty, and a window is
  occluded by setting its standardised stream to 0 (its mean over the codebook or the train split);
- over time, SSL variants: a window is deleted from both streams (whole 40 ms pairs: 2 SSL frames and
  their 3 codec frames), the rest scored as one file. The SSL stream has no neutral value to put in a
  window's place; deletion needs none.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from classify.align import CODEC_PER_PAIR, PAIR_SECONDS, SSL_PER_PAIR
from classify.data import eval_segments
from classify.evaluate import autocast
from classify.frames import length_batches
from classify.fusion import FusedDetector
from classify.model import SpoofDetector


@dataclass(frozen=True)
class Explanation:
    """:meth:`Detector.explain`'s result. ``levels`` [Q]: score change when level q (1-based index
    q + 1) is occluded by its mean codeword (empty for the `latent` variant); ``times`` [W]: centres
    (seconds) of the occluded windows; ``over_time`` [W]: score change when that window is occluded;
    ``waveform`` [T]: the mono 24 kHz audio the codec saw. Change = score - occluded score: positive
    means that part pushed the score towards bona fide."""

    score: float
    llr: float | None
    decision: str
    levels: np.ndarray
    times: np.ndarray
    over_time: np.ndarray
    window_seconds: float
    hop_seconds: float
    waveform: np.ndarray
    sample_rate: int
    codec_weights: str
    method: str


def explain(detector: Any, features: Any, wav: Tensor, window_seconds: float,
            hop_seconds: float | None) -> Explanation:
    """The explanation of one file's ``features`` (`extract.frontend.Features`) by ``detector`` (a
    `classify.detector.Detector`); ``wav`` [1, T]: the audio the codec saw. See the module docstring."""
    score = float(detector.score_features([features])[0])
    levels = level_contributions(detector, features, score)
    if not isinstance(detector.model, FusedDetector):
        rate = detector.codec.frame_rate
        window = max(1, round(window_seconds * rate))
        hop = max(1, round((hop_seconds or window_seconds / 2) * rate))
        starts, over_time = window_occlusion(detector.model, features.codes, features.latent, detector.window, window,
                                             hop, detector.frame_budget, detector.device, detector.dtype)
        times = (starts + min(window, features.codes.shape[0]) / 2) / rate
        window_s, hop_s = window / rate, hop / rate
        label = detector.codec_label
        method = (f"occlusion: a level's embeddings, or every level in a {window_s:.2f} s window every "
                  f"{hop_s:.2f} s, replaced by the mean codeword; change = score - occluded score")
    else:
        pairs = features.ssl.shape[0] // SSL_PER_PAIR
        window = min(max(1, round(window_seconds / PAIR_SECONDS)), pairs - 1)  # at least one pair stays
        hop = max(1, round((hop_seconds or window_seconds / 2) / PAIR_SECONDS))
        starts = window_starts(pairs, window, hop) if window > 0 else np.empty(0, np.int64)
        cut = [_without_pairs(features, p0, p0 + window) for p0 in starts.tolist()]
        over_time = score - detector.score_features(cut) if cut else np.empty(0)
        times = (starts + window / 2) * PAIR_SECONDS
        window_s, hop_s = window * PAIR_SECONDS, hop * PAIR_SECONDS
        label = detector.weights_label
        method = (f"occlusion: a codec level's embeddings replaced by its mean codeword; a {window_s:.2f} s "
                  f"window every {hop_s:.2f} s deleted from both streams (the SSL stream has no neutral "
                  "value); change = score - occluded score")
    llr = detector.llr(score)
    return Explanation(score=score, llr=llr, decision=detector.threshold.decide(score, llr), levels=levels,
                       times=times, over_time=np.asarray(over_time, dtype=np.float64), window_seconds=window_s,
                       hop_seconds=hop_s, waveform=wav[0].numpy(), sample_rate=detector.front_end.sample_rate,
                       codec_weights=label, method=method)


def level_contributions(detector: Any, features: Any, score: float) -> np.ndarray:
    """[Q]: ``score`` minus the file's score by a copy of the detector's model whose level q table rows
    are all set to the level's mean codeword (empty when the model reads no levels)."""
    weighting = detector.model.weighting
    if weighting is None or weighting.spec.stream is not None:
        return np.empty(0)
    occluded = copy.deepcopy(detector.model)  # one copy; each level's rows are set, scored and restored
    table = occluded.weighting.table.view(weighting.n_q, weighting.n_codes, weighting.dim)
    changed = []
    for q in range(weighting.n_q):
        with torch.no_grad():
            rows = table[q].clone()
            table[q] = rows.mean(dim=0)
        changed.append(float(detector.score_features([features], occluded)[0]))
        with torch.no_grad():
            table[q] = rows
    return score - np.array(changed)


def _without_pairs(features: Any, p0: int, p1: int) -> Any:
    """``features`` with pairs p0..p1 (their SSL and codec frames) deleted."""

    def keep(a: np.ndarray | None, per: int) -> np.ndarray | None:
        return None if a is None else np.concatenate([a[: p0 * per], a[p1 * per :]])

    return dataclasses.replace(features, codes=keep(features.codes, CODEC_PER_PAIR),
                               latent=keep(features.latent, CODEC_PER_PAIR), ssl=keep(features.ssl, SSL_PER_PAIR))


class _Features:
    """One utterance's fused features h [T, D] = weighting(codes [T, Q]) and the fully occluded frame."""

    def __init__(self, model: SpoofDetector, codes: Tensor, latent: Tensor | None) -> None:
        w = model.weighting
        if w.spec.stream is not None:  # `latent` and `energy` read a continuous stream, not levels
            self.h = w(codes[None], None if latent is None else latent[None])[0]
            self.occluded = self.h.new_zeros(self.h.shape[-1])
            return
        means = w.table.view(w.n_q, w.n_codes, w.dim).mean(dim=1)  # [Q, D]: each level's mean codeword
        self.h = w(codes[None])[0]
        self.occluded = (w.alpha().reshape(w.n_q, -1) * means).sum(dim=0)  # [D]: every level at its mean codeword

    def without_window(self, start: int, length: int, lo: int, hi: int) -> Tensor:
        """Frames start..start+length [L, D] with frames lo..hi (absolute) fully occluded."""
        piece = self.h[start : start + length].clone()
        piece[lo - start : hi - start] = self.occluded
        return piece


def _logits(model: SpoofDetector, lengths: list[int], make: Callable[[int], Tensor], budget: int) -> np.ndarray:
    """Head logits [N] of N feature pieces (piece i = ``make(i)``, [lengths[i], D]), built and scored
    in zero-padded batches of at most ``budget`` frames, longest first (`classify.frames.length_batches`)."""
    out = np.empty(len(lengths))
    for chosen in length_batches(lengths, budget):
        pieces = [make(i) for i in chosen.tolist()]
        batch = pieces[0].new_zeros(len(chosen), lengths[chosen[0]], pieces[0].shape[1])
        for row, piece in enumerate(pieces):
            batch[row, : piece.shape[0]] = piece
        out[chosen] = model.head(batch, torch.tensor([lengths[i] for i in chosen])).float().cpu().numpy()
    return out


def window_starts(n: int, window: int, hop: int) -> np.ndarray:
    """First positions of windows of ``window`` (1..n) every ``hop`` over ``n`` positions, the last
    ending at the last position."""
    starts = np.arange(0, n - window + 1, max(1, hop))
    if starts[-1] != n - window:
        starts = np.append(starts, n - window)
    return starts


@torch.no_grad()
def window_occlusion(model: SpoofDetector, codes: np.ndarray, latent: np.ndarray | None, segment: int, window: int,
                     hop: int, budget: int, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(first frame of each occluded window [W], its contribution [W]) for one utterance of a codec
    variant: codes [T, Q] (latent [T, D] for `latent`); ``segment`` frames: the longest scored piece
    (evaluation's window); ``window``/``hop``: the occluded windows, in frames; ``budget``: frames per
    head batch; ``device``: where the model is; ``dtype``: the scoring's autocast. See the module docstring."""
    model.eval()
    device = torch.device(device)
    n = codes.shape[0]
    with autocast(device, dtype):
        f = _Features(model, torch.from_numpy(codes.astype(np.int64)).to(device),
                      None if latent is None else torch.from_numpy(latent).to(device))
        _, seg_start, seg_len = eval_segments(np.array([n]), segment)
        segments = list(zip(seg_start.tolist(), seg_len.tolist()))
        base = _logits(model, [m for _, m in segments], lambda k: f.h[segments[k][0] : sum(segments[k])], budget)
        window = min(window, n)
        starts = window_starts(n, window, hop)
        pairs = [(w, k, max(start, s), min(start + window, s + m)) for w, start in enumerate(starts.tolist())
                 for k, (s, m) in enumerate(segments) if max(start, s) < min(start + window, s + m)]
        changed = _logits(model, [segments[k][1] for _, k, _, _ in pairs],
                          lambda i: f.without_window(*segments[pairs[i][1]], pairs[i][2], pairs[i][3]), budget)
    totals = np.full(starts.size, base.sum())
    for (w, k, _, _), value in zip(pairs, changed):
        totals[w] += value - base[k]
    return starts, float(base.mean()) - totals / len(segments)

"""Why a model scored an utterance as it did, by occlusion.

Both explanations replace embeddings by a neutral value and report the score change
``contribution = score - occluded score`` (positive: that part pushed the score towards bona fide):

- per quantizer level q: every frame's level-q embedding C_q[code_q[t]] is replaced by the level's
  mean codeword mean_k C_q[k] (in the model's own, possibly standardised, tables);
- over time: the frames of a sliding window (``window`` frames every ``hop`` frames) get every
  level replaced by its mean codeword; the contribution is reported at the window's centre.

Scores are computed as evaluation computes them (`classify.data.eval_segments`: the whole
utterance, or the mean logit over evenly spread windows of ``segment`` frames of a longer one),
from the fused features: h[t] = sum_q alpha_q * T_q[code_q[t]] with alpha and the tables T of the
model's `HierarchyWeighting`, so that occluding a level subtracts alpha_q * (T_q[code_q[t]] -
mean_q). For the variants that read a continuous stream (`latent`, `energy`: no levels) the
per-level contributions are empty, and a window is occluded by setting its standardised stream to 0
(its mean over the codebook or the train split). Only the segments a
window overlaps are scored again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from classify.data import eval_segments
from classify.model import SpoofDetector


@dataclass(frozen=True)
class Occlusion:
    """``score``: the logit; ``levels`` [Q] (empty for `latent` and `energy`): per-level contributions;
    ``starts`` [W]: first frame of each occluded window; ``over_time`` [W]: its contribution."""

    score: float
    levels: np.ndarray
    starts: np.ndarray
    over_time: np.ndarray


class _Features:
    """One utterance's fused features h [T, D] = weighting(codes [T, Q]) and their occluded forms."""

    def __init__(self, model: SpoofDetector, codes: Tensor, latent: Tensor | None) -> None:
        w = model.weighting
        self.codes = codes
        self.has_levels = w.spec.stream is None  # `latent` and `energy` read a continuous stream, not levels
        if not self.has_levels:
            self.h = w(codes[None], None if latent is None else latent[None])[0]
            self.occluded = self.h.new_zeros(self.h.shape[-1])
            self.n_levels = 0
            return
        self.tables = w.table.view(w.n_q, w.n_codes, w.dim)
        self.means = self.tables.mean(dim=1)  # [Q, D]: each level's mean codeword
        self.alpha = w.alpha().reshape(w.n_q, -1)  # [Q, 1] or [Q, D]
        self.h = w(codes[None])[0]
        self.occluded = (self.alpha * self.means).sum(dim=0)  # [D]: every level at its mean codeword
        self.n_levels = w.n_q

    def without_level(self, q: int, start: int, length: int) -> Tensor:
        """Frames start..start+length [L, D] with level q's embeddings replaced by its mean codeword."""
        rows = self.tables[q, self.codes[start : start + length, q]]
        return self.h[start : start + length] - self.alpha[q] * (rows - self.means[q])

    def without_window(self, start: int, length: int, lo: int, hi: int) -> Tensor:
        """Frames start..start+length [L, D] with frames lo..hi (absolute) fully occluded."""
        piece = self.h[start : start + length].clone()
        piece[lo - start : hi - start] = self.occluded
        return piece


def _logits(model: SpoofDetector, lengths: list[int], make: Callable[[int], Tensor], budget: int) -> np.ndarray:
    """Head logits [N] of N feature pieces (piece i = ``make(i)``, [lengths[i], D]), built and scored
    in zero-padded batches of at most ``budget`` frames, longest first."""
    out = np.empty(len(lengths))
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    first = 0
    while first < len(order):
        longest = lengths[order[first]]
        chosen = order[first : first + max(1, budget // longest)]
        pieces = [make(i) for i in chosen]
        batch = pieces[0].new_zeros(len(chosen), longest, pieces[0].shape[1])
        for row, piece in enumerate(pieces):
            batch[row, : piece.shape[0]] = piece
        out[chosen] = model.head(batch, torch.tensor([lengths[i] for i in chosen])).float().cpu().numpy()
        first += len(chosen)
    return out


def window_starts(n: int, window: int, hop: int) -> np.ndarray:
    """First positions of windows of ``window`` (1..n) every ``hop`` over ``n`` positions, the last
    ending at the last position."""
    starts = np.arange(0, n - window + 1, max(1, hop))
    if starts[-1] != n - window:
        starts = np.append(starts, n - window)
    return starts


@torch.no_grad()
def occlusion(model: SpoofDetector, codes: np.ndarray, latent: np.ndarray | None, segment: int, window: int,
              hop: int, budget: int, device: torch.device | str = "cpu") -> Occlusion:
    """Occlusion explanation of one utterance: codes [T, Q] (latent [T, D] for `latent`); ``segment``
    frames: the longest scored piece (evaluation's window); ``window``/``hop``: the occluded windows,
    in frames; ``budget``: frames per head batch; ``device``: where the model is. See the module
    docstring."""
    model.eval()
    n = codes.shape[0]
    f = _Features(model, torch.from_numpy(codes.astype(np.int64)).to(device),
                  None if latent is None else torch.from_numpy(latent).to(device))
    _, seg_start, seg_len = eval_segments(np.array([n]), segment)
    segments = list(zip(seg_start.tolist(), seg_len.tolist()))
    base = _logits(model, [m for _, m in segments], lambda k: f.h[segments[k][0] : sum(segments[k])], budget)
    score = float(base.mean())

    jobs = [(q, s, m) for q in range(f.n_levels) for s, m in segments]
    changed = _logits(model, [m for _, _, m in jobs], lambda i: f.without_level(*jobs[i]), budget)
    levels = score - changed.reshape(f.n_levels, len(segments)).mean(axis=1) if jobs else np.empty(0)

    window = min(window, n)
    starts = window_starts(n, window, hop)
    pairs = [(w, k, max(start, s), min(start + window, s + m)) for w, start in enumerate(starts.tolist())
             for k, (s, m) in enumerate(segments) if max(start, s) < min(start + window, s + m)]
    changed = _logits(model, [segments[k][1] for _, k, _, _ in pairs],
                      lambda i: f.without_window(*segments[pairs[i][1]], pairs[i][2], pairs[i][3]), budget)
    totals = np.full(starts.size, base.sum())
    for (w, k, _, _), value in zip(pairs, changed):
        totals[w] += value - base[k]
    return Occlusion(score, levels, starts, score - totals / len(segments))

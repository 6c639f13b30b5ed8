"""Confidence intervals for EERs from a bootstrap that resamples speakers and attacks.

The utterances of one speaker are not independent trials, nor are the spoofs of one attack: a
bootstrap over utterances would pretend they are and give intervals that are far too narrow. Here a
replicate draws, with replacement, as many speakers as the scored set has (each speaker with all
its utterances) and, independently, as many attacks as it has (each with all its spoofs). An
utterance enters the replicate once for every draw of its speaker, times, for a spoof, every draw
of its attack (bona fide utterances have no attack): a two-way cluster ("pigeonhole") bootstrap
of a crossed design. The replicate's EER is the official EER (`classify.metrics.compute_eer`) of
that list of trials with its copies, computed exactly without building the list
(:func:`replicate_eers`). A replicate without bona fide or without spoof trials has no EER (NaN).

Intervals are percentile intervals of the replicates (95 %: the 2.5th and 97.5th percentiles).
Everything is seeded: the same seed and inputs give the same draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Replicates processed at once (bounds the [chunk, N, 4] candidate arrays).
_CHUNK = 256


def cluster_counts(speakers: Sequence[str], attacks: Sequence[str], is_bonafide: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Copies of each utterance in each replicate, int64 [n_boot, N].

    ``speakers`` [N] and ``attacks`` [N] label each utterance (the attack of a bona fide utterance
    is ignored); a replicate draws len(unique speakers) speakers and len(unique spoof attacks)
    attacks uniformly with replacement."""
    is_bonafide = np.asarray(is_bonafide, dtype=bool)
    speaker_code, speaker_names = pd.factorize(pd.Series(list(speakers)))
    spoof_attacks = pd.Series(list(attacks))[~is_bonafide]
    attack_code = np.zeros(is_bonafide.size, dtype=np.int64)
    codes, attack_names = pd.factorize(spoof_attacks)
    attack_code[~is_bonafide] = codes
    n_spk, n_att = len(speaker_names), max(len(attack_names), 1)
    spk = rng.multinomial(n_spk, np.full(n_spk, 1 / n_spk), size=n_boot)  # [R, n_spk]
    att = rng.multinomial(n_att, np.full(n_att, 1 / n_att), size=n_boot)  # [R, n_att]
    return spk[:, speaker_code] * np.where(is_bonafide, 1, att[:, attack_code])


def _best_in_blocks(fixed_num: np.ndarray, fixed_den: np.ndarray, start: np.ndarray, den: np.ndarray,
                    count: np.ndarray, moving_frr: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each block of ``count`` copies (all arrays [R, N]), the first DET point of the block where
    |frr - far| is smallest: (that |frr - far|, the EER value (frr + far) / 2 there). Inside a
    block one rate moves by 1 / den per copy (frr up for bona fide, far down for spoof) and the
    other stays at fixed_num / fixed_den; |frr - far| is V-shaped in the copy index, so its first
    minimum lies within one copy of the real crossing: four candidates cover rounding."""
    other = fixed_num / fixed_den
    if moving_frr:  # frr = (start + j) / den, j = 1..count
        crossing = np.floor(other * den - start)
    else:  # far = (start - j) / den
        crossing = np.floor(start - other * den)
    best_gap = np.full(count.shape, np.inf)
    best_eer = np.full(count.shape, np.nan)
    for shift in (-1, 0, 1, 2):  # ascending j: on equal gaps the earlier point wins
        j = np.clip(crossing + shift, 1, np.maximum(count, 1))
        moving = (start + j) / den if moving_frr else (start - j) / den
        frr, far = (moving, other) if moving_frr else (other, moving)
        gap = np.abs(frr - far)
        better = gap < best_gap
        best_gap = np.where(better, gap, best_gap)
        best_eer = np.where(better, (frr + far) / 2, best_eer)
    best_gap[count == 0] = np.inf
    return best_gap, best_eer


def replicate_eers(scores: np.ndarray, is_bonafide: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """EER of each replicate, float64 [R]: for replicate r, exactly ``compute_eer`` of the bona fide
    and spoof score lists in which utterance i appears ``counts[r, i]`` times (in the input order);
    NaN where a class is empty.

    The official DET curve sorts the concatenation [bona fide, spoof] stably; copies of an utterance
    are adjacent there, so the curve is the sorted utterances taken block by block. Along it frr
    never falls and far never rises, so frr - far increases and |frr - far| is smallest where
    frr - far changes sign: in the first block that ends with frr >= far, or at the point just before
    it. That block's best point is found in closed form (:func:`_best_in_blocks`). Cost: a few
    cumulative sums over [R, N], no sort per replicate."""
    scores = np.asarray(scores, dtype=np.float64)
    is_bonafide = np.asarray(is_bonafide, dtype=bool)
    counts = np.asarray(counts, dtype=np.int64)
    concat = np.concatenate([np.flatnonzero(is_bonafide), np.flatnonzero(~is_bonafide)])
    order = concat[np.argsort(scores[concat], kind="mergesort")]
    bona = is_bonafide[order]
    out = np.full(counts.shape[0], np.nan)
    for first in range(0, counts.shape[0], _CHUNK):
        c = counts[first : first + _CHUNK][:, order].astype(np.float64)  # [r, N] in DET order
        cb = c * bona
        cs = c - cb
        ends_b, ends_s = np.cumsum(cb, axis=1), np.cumsum(cs, axis=1)  # rejected at each block's end
        n_bona, n_spoof = ends_b[:, -1], ends_s[:, -1]
        valid = (n_bona > 0) & (n_spoof > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ends_d = ends_b / n_bona[:, None] - (n_spoof[:, None] - ends_s) / n_spoof[:, None]
            block = np.argmax(ends_d >= 0, axis=1)  # first block ending with frr >= far
            rows = np.arange(c.shape[0])
            count = c[rows, block]
            before_b, before_s = ends_b[rows, block] - cb[rows, block], ends_s[rows, block] - cs[rows, block]
            if_bona = bona[block]
            gap_b, eer_b = _best_in_blocks(n_spoof - before_s, n_spoof, before_b, n_bona, count, True)
            gap_s, eer_s = _best_in_blocks(before_b, n_bona, n_spoof - before_s, n_spoof, count, False)
            gap, eer = np.where(if_bona, gap_b, gap_s), np.where(if_bona, eer_b, eer_s)
            prev_frr, prev_far = before_b / n_bona, (n_spoof - before_s) / n_spoof  # the point before the block
            prev_gap, prev_eer = np.abs(prev_frr - prev_far), (prev_frr + prev_far) / 2
        chunk = np.where(prev_gap <= gap, prev_eer, eer)
        out[first : first + chunk.size] = np.where(valid, chunk, np.nan)
    return out


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile interval of the finite replicates [R] at ``level``; NaNs when none."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)

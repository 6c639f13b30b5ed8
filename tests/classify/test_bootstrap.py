"""The speaker x attack bootstrap: its draws, and EERs equal to the official EER of the replicated lists."""

from __future__ import annotations

import numpy as np
import pytest

from classify.bootstrap import cluster_counts, percentile_interval, replicate_eers
from classify.metrics import compute_eer


def explicit_eer(scores: np.ndarray, bona: np.ndarray, copies: np.ndarray) -> float:
    """The reference: build the replicated trial lists and call the official-equivalent EER."""
    b, s = np.repeat(scores[bona], copies[bona]), np.repeat(scores[~bona], copies[~bona])
    return compute_eer(b, s)[0] if b.size and s.size else float("nan")


@pytest.mark.parametrize("case", range(12))
def test_replicate_eers_equal_the_eer_of_the_replicated_lists(case):
    """Random sizes, heavy ties (rounded scores), few speakers and attacks, empty replicates."""
    rng = np.random.default_rng(case)
    n = int(rng.integers(3, 200))
    bona = rng.random(n) < rng.uniform(0.2, 0.8)
    scores = np.round(rng.normal(bona * rng.uniform(0, 2), 1), int(rng.integers(0, 3)))
    speakers = [f"s{k}" for k in rng.integers(0, rng.integers(1, 7), n)]
    attacks = [f"A{k}" for k in rng.integers(0, rng.integers(1, 5), n)]
    counts = cluster_counts(speakers, attacks, bona, 60, np.random.default_rng(case))
    fast = replicate_eers(scores, bona, counts)
    slow = np.array([explicit_eer(scores, bona, counts[r]) for r in range(60)])
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.array_equal(fast[~np.isnan(fast)], slow[~np.isnan(slow)])


def test_unit_counts_give_the_plain_eer_and_constant_scores_the_official_one():
    rng = np.random.default_rng(1)
    bona = rng.random(300) < 0.4
    scores = rng.normal(bona, 1)
    assert replicate_eers(scores, bona, np.ones((1, 300), dtype=int))[0] == compute_eer(scores[bona], scores[~bona])[0]
    assert replicate_eers(np.zeros(10), np.arange(10) < 4, np.full((2, 10), 3))[0] == 1.0  # ties: bona fide first


def test_draws_resample_whole_speakers_and_attacks():
    speakers = ["a", "a", "b", "b", "c", "c", "c"]
    attacks = ["bonafide", "A1", "bonafide", "A2", "A1", "A2", "bonafide"]
    bona = np.array([True, False, True, False, False, False, True])
    counts = cluster_counts(speakers, attacks, bona, 500, np.random.default_rng(0))
    # utterances of one speaker always have the same speaker multiplicity: a bona fide one shows it
    spk_a, spk_b, spk_c = counts[:, 0], counts[:, 2], counts[:, 6]
    assert np.array_equal(spk_a + spk_b + spk_c, np.full(500, 3))  # 3 speaker draws per replicate
    # a spoof counts (its speaker's draws) x (its attack's draws); attacks are drawn twice per replicate
    assert np.array_equal(counts[:, 4] * spk_a, counts[:, 1] * spk_c)  # both A1: spk_a * spk_c * n(A1)
    assert np.array_equal(counts[:, 5] * spk_b, counts[:, 3] * spk_c)  # both A2
    has_c = spk_c > 0
    assert np.array_equal((counts[has_c, 4] + counts[has_c, 5]) / spk_c[has_c], np.full(has_c.sum(), 2.0))
    assert set(np.unique(spk_a)) == {0, 1, 2, 3} and 0 < (spk_a == 0).mean() < 0.5  # really resampled
    again = cluster_counts(speakers, attacks, bona, 500, np.random.default_rng(0))
    assert np.array_equal(counts, again)  # seeded


def test_percentile_interval():
    values = np.concatenate([np.arange(1001) / 1000, [np.nan]])
    low, high = percentile_interval(values, 0.95)
    assert (low, high) == pytest.approx((0.025, 0.975))
    assert all(np.isnan(percentile_interval(np.full(3, np.nan))))

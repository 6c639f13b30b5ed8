"""Planted-signal stores: the effect is what its sizing says, and the learned hierarchy weights find
the one level that carries the label (the fast version of bench/bench_planted.py).

The stores are small (K = 64 codes, D = 16 dims, 256 train / 200 dev utterances of 1 to 2 s) but
carry the benchmark's planted effect: d' = 5 at 1 s for the planted level alone (EER 0.6 %), which
`mean` dilutes to d' = 5 / sqrt(8) (EER about 17 % at 1 s, 14 % on these 1 to 2 s utterances).
Training uses the product's defaults (weights_lr, tau, level_norm) at the sweep's lr, with a
16-unit LSTM head for 10 epochs (80 steps); seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from classify.config import TrainConfig
from classify.metrics import compute_eer
from classify.planted import Plant, PlantedSpec, make_planted, standardise, write_planted_store
from classify.train import train
from store.reader import FeatureStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D_PRIME = 5.0
SMALL = dict(codebook_size=64, dim=16, sizes={"train": 256, "dev": 200, "eval": 200})


def quiet(_: str) -> None:
    pass


def config(variant: str, **overrides) -> TrainConfig:
    values = dict(variant=variant, epochs=10, batch_size=32, lr=3e-3, crop_seconds=1.0, patience=0,
                  head_kwargs={"proj_dim": 16, "hidden_dim": 16}, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def per_level(alpha) -> np.ndarray:
    """alpha [Q] or [Q, D] -> the mean weight of each level [Q]."""
    alpha = np.asarray(alpha)
    return alpha.mean(axis=1) if alpha.ndim == 2 else alpha


def dominance(alpha, level: int) -> float:
    """Mean weight of ``level`` (1-based) over the largest mean weight of any other level."""
    weights = per_level(alpha)
    return float(weights[level - 1] / np.delete(weights, level - 1).max())


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[int, FeatureStore]:
    root = tmp_path_factory.mktemp("planted")
    return {k: FeatureStore(write_planted_store(str(root / f"k{k}.zarr"),
                                                make_planted(PlantedSpec(plants=(Plant(k, D_PRIME),), **SMALL))))
            for k in (1, 4, 8)}


def matched_filter_scores(data, level: int, alpha: np.ndarray, frames: int = 75) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the eval utterances' first ``frames`` frames: the time mean of sum_q alpha_q z_q
    (standardised codebooks) projected on the planted level's half-difference; and is_bonafide."""
    z = np.stack([standardise(book.astype(np.float64)) for book in data.codebooks])  # [Q, K, D]
    half = z.shape[1] // 2
    delta = z[level - 1, :half].mean(0) - z[level - 1, half:].mean(0)
    table = data.table[data.table["split"] == "eval"]
    scores = []
    for start in table["frame_offset"]:
        codes = data.codes[start : start + frames].astype(np.int64)
        fused = (z[np.arange(z.shape[0])[None, :], codes] * alpha[None, :, None]).sum(1)  # [T, D]
        scores.append(fused.mean(0) @ delta)
    return np.array(scores), (table["label"] == "bonafide").to_numpy()


def d_prime(scores: np.ndarray, bona: np.ndarray) -> float:
    a, b = scores[bona], scores[~bona]
    return float((a.mean() - b.mean()) / math.sqrt(0.5 * (a.var() + b.var())))


def test_the_planted_effect_is_the_one_it_was_sized_for():
    """The matched filter on 1 s segments separates the classes by the d' the share was solved for;
    `mean` weighting divides it by sqrt(Q); an unplanted level carries nothing."""
    data = make_planted(PlantedSpec(plants=(Plant(3, D_PRIME),), codebook_size=64, dim=16,
                                    sizes={"eval": 3000}, seed=5))
    assert data.d_prime[3] == pytest.approx(D_PRIME) and 0 < data.shares[3] < 1
    alone = np.eye(8)[2]
    scores, bona = matched_filter_scores(data, 3, alone)
    assert d_prime(scores, bona) == pytest.approx(D_PRIME, rel=0.1)
    assert 100 * compute_eer(scores[bona], scores[~bona])[0] == pytest.approx(100 * norm.cdf(-D_PRIME / 2), abs=0.5)
    scores, bona = matched_filter_scores(data, 3, np.full(8, 1 / 8))
    assert d_prime(scores, bona) == pytest.approx(D_PRIME / math.sqrt(8), rel=0.15)
    # level 5 carries no label: its own matched filter (its halves' difference) sees nothing
    scores, bona = matched_filter_scores(data, 5, np.eye(8)[4])
    assert abs(d_prime(scores, bona)) < 0.15


def test_a_plant_over_some_dims_leaves_the_other_dims_identical_between_halves():
    data = make_planted(PlantedSpec(plants=(Plant(2, 3.0, (0, 8)), Plant(6, 3.0, (8, 16))), codebook_size=64,
                                    dim=16, sizes={"eval": 4}))
    half = 32
    assert np.array_equal(data.codebooks[1, :half, 8:], data.codebooks[1, half:, 8:])
    assert not np.allclose(data.codebooks[1, :half, :8], data.codebooks[1, half:, :8])
    assert np.array_equal(data.codebooks[5, :half, :8], data.codebooks[5, half:, :8])
    ratios = np.linalg.norm(data.codebooks.reshape(8, -1), axis=1)
    assert ratios[1:] / ratios[:-1] == pytest.approx(0.5, rel=0.05)  # RVQ-like shrinking levels


def test_an_impossible_effect_is_refused():
    with pytest.raises(ValueError, match="share of .* > 1"):
        make_planted(PlantedSpec(plants=(Plant(1, 50.0),), codebook_size=64, dim=16, sizes={"eval": 2}))


@pytest.mark.parametrize("k", [1, 4, 8])
def test_learned_weights_find_the_planted_level(stores, tmp_path, k):
    """scalar and qaf-static reach a dev EER <= 2 % with level k's mean weight >= 2x any other's."""
    for variant in ("scalar", "qaf-static"):
        result = train(config(variant), stores[k], tmp_path / variant, log=quiet)
        assert result.best_dev_eer <= 0.02, (variant, result.best_dev_eer)
        assert dominance(result.level_weights, k) >= 2.0, (variant, per_level(result.level_weights))


def test_noise_levels_stay_at_chance_and_mean_is_diluted(stores, tmp_path):
    """single:j for j != k learns nothing (dev EER > 40 %); `mean` lands in between (theory: d' / sqrt(8),
    about 14 % on these utterances), far from the planted level's own <= 2 %."""
    for j in (1, 8):
        result = train(config(f"single:{j}"), stores[4], tmp_path / f"single{j}", log=quiet)
        assert result.best_dev_eer > 0.40, (j, result.best_dev_eer)
    mean = train(config("mean"), stores[4], tmp_path / "mean", log=quiet)
    assert 0.05 < mean.best_dev_eer < 0.30


def test_at_the_head_learning_rate_the_weights_stay_near_uniform(stores, tmp_path):
    """The finding behind weights_lr: Adam moves a logit by about its learning rate per step, so at
    weights_lr = lr = 3e-3 the 80 cosine-scheduled steps (sum of rates 0.12) allow a ratio of at most
    about exp(2 * 0.12) = 1.27 between two levels, however strong the signal."""
    result = train(config("scalar", weights_lr=3e-3), stores[4], tmp_path, log=quiet)
    assert 1.0 < dominance(result.level_weights, 4) < 1.35

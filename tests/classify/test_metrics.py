"""classify.metrics against independent references: plain-loop re-statements of the official
ASVspoof definitions, hand-computed small cases, and the real ASVspoof5 scores with the official
package's values (scores_asv5, skipped when absent)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from classify.metrics import (
    ASVSPOOF2019_COST_MODEL,
    TDCFCostModel,
    actdcf_threshold,
    asv_error_rates,
    compute_actdcf,
    compute_cllr,
    compute_det_curve,
    compute_eer,
    compute_mindcf,
    compute_tdcf_legacy,
    metrics_table,
)

SCORES_ASV5 = Path(__file__).resolve().parents[2].parent / "shared/data/scores_asv5"


# ---------------------------------------------------------------- slow loop references


def ref_det(bona: list[float], spoof: list[float]) -> tuple[list[float], list[float], list[float]]:
    """Official DET points by counting, without argsort: walk the distinct scores upwards; inside
    a tie group the official stable order rejects the group's bona fide trials first, then its
    spoof trials, one trial per DET point."""
    frr, far, thr = [0.0], [1.0], [min(bona + spoof) - 0.001]
    for s in sorted(set(bona + spoof)):
        bona_below = sum(1 for x in bona if x < s)
        spoof_below = sum(1 for x in spoof if x < s)
        bona_at = sum(1 for x in bona if x == s)
        spoof_at = sum(1 for x in spoof if x == s)
        for j in range(1, bona_at + spoof_at + 1):
            bona_rejected = bona_below + min(j, bona_at)
            spoof_rejected = spoof_below + max(0, j - bona_at)
            frr.append(bona_rejected / len(bona))
            far.append((len(spoof) - spoof_rejected) / len(spoof))
            thr.append(s)
    return frr, far, thr


def ref_eer(bona: list[float], spoof: list[float]) -> tuple[float, float]:
    """EER by brute force over all DET points (first minimum of |frr - far|)."""
    frr, far, thr = ref_det(bona, spoof)
    best, best_i = math.inf, -1
    for i in range(len(frr)):
        if abs(frr[i] - far[i]) < best:
            best, best_i = abs(frr[i] - far[i]), i
    return (frr[best_i] + far[best_i]) / 2, thr[best_i]


def ref_mindcf(bona, spoof, p_spoof=0.05, c_miss=1, c_fa=10) -> tuple[float, float]:
    """The official compute_mindcf loop (strict '<' keeps the first minimum)."""
    frr, far, thr = ref_det(bona, spoof)
    p_target = 1 - p_spoof
    min_c, min_t = math.inf, None
    for i in range(len(frr)):
        c = c_miss * frr[i] * p_target + c_fa * far[i] * (1 - p_target)
        if c < min_c:
            min_c, min_t = c, thr[i]
    return min_c / min(c_miss * p_target, c_fa * (1 - p_target)), min_t


def ref_actdcf(bona, spoof, p_spoof=0.05, c_miss=1, c_fa=10) -> float:
    threshold = -math.log(c_miss * (1 - p_spoof) / (c_fa * p_spoof))
    p_miss = sum(1 for x in bona if x < threshold) / len(bona)
    p_fa = sum(1 for x in spoof if x >= threshold) / len(spoof)
    dcf = c_miss * (1 - p_spoof) * p_miss + c_fa * p_spoof * p_fa
    return dcf / min(c_fa * p_spoof, c_miss * (1 - p_spoof))


def ref_cllr(bona, spoof) -> float:
    bona_cost = sum(math.log1p(math.exp(-x)) for x in bona) / len(bona)
    spoof_cost = sum(math.log1p(math.exp(x)) for x in spoof) / len(spoof)
    return 0.5 * (bona_cost + spoof_cost) / math.log(2)


def ref_min_tdcf(bona, spoof, pfa_asv, pmiss_asv, pmiss_spoof_asv) -> float:
    """Official 2019 t-DCF written out with the LA cost model's numbers."""
    p_spoof = 0.05
    p_tar, p_non = (1 - p_spoof) * 0.99, (1 - p_spoof) * 0.01
    c1 = p_tar * (1 - 1 * pmiss_asv) - p_non * 10 * pfa_asv
    c2 = 10 * p_spoof * (1 - pmiss_spoof_asv)
    frr, far, _ = ref_det(bona, spoof)
    return min((c1 * m + c2 * f) / min(c1, c2) for m, f in zip(frr, far))


def random_tied(rng: np.random.Generator, n_bona: int, n_spoof: int) -> tuple[list[float], list[float]]:
    """Overlapping classes rounded to 0.1, so most scores are tied within and across classes."""
    bona = np.round(rng.normal(0.8, 1.0, n_bona), 1)
    spoof = np.round(rng.normal(-0.8, 1.0, n_spoof), 1)
    return bona.tolist(), spoof.tolist()


# ---------------------------------------------------------------- hand-computed cases


def test_det_curve_with_cross_class_tie_by_hand():
    # sorted (stable): 1b, 2b, 2s, 3s -> bona fide 2 is rejected before spoof 2
    frr, far, thr = compute_det_curve([1.0, 2.0], [2.0, 3.0])
    np.testing.assert_array_equal(frr, [0, 0.5, 1, 1, 1])
    np.testing.assert_array_equal(far, [1, 1, 1, 0.5, 0])
    np.testing.assert_allclose(thr, [0.999, 1, 2, 2, 3], rtol=0, atol=1e-15)


def test_reversed_pair_with_tie_by_hand():
    # point 2 (both bona fide rejected, both spoofs accepted) has frr = far = 1
    eer, threshold = compute_eer([1.0, 2.0], [2.0, 3.0])
    assert eer == 1.0 and threshold == 2.0
    # DCF = 0.95 frr + 0.5 far: accept-all (0.5) is cheapest -> normalised 1.0 at 1 - 0.001
    min_dcf, dcf_threshold = compute_mindcf([1.0, 2.0], [2.0, 3.0])
    assert min_dcf == pytest.approx(1.0, abs=1e-12)
    assert dcf_threshold == pytest.approx(0.999, abs=1e-12)
    # all scores are above -ln(1.9): no miss, every spoof accepted -> 0.5 / 0.5
    act_dcf, act_threshold = compute_actdcf([1.0, 2.0], [2.0, 3.0])
    assert act_dcf == pytest.approx(1.0, abs=1e-12)
    assert act_threshold == pytest.approx(-math.log(1.9), abs=1e-15)


def test_tie_order_bona_fide_first_by_hand():
    # sorted (stable): 0s, 1b, 1s, 2b, 2b; frr 0,0,1/3,1/3,2/3,1; far 1,.5,.5,0,0,0
    # |frr - far| is smallest (1/6) at point 2: EER = (1/3 + 1/2) / 2 = 5/12 at threshold 1.
    # (Ordering spoof first inside ties would give EER 0 instead.)
    eer, threshold = compute_eer([1.0, 2.0, 2.0], [0.0, 1.0])
    assert eer == pytest.approx(5 / 12, abs=1e-15)
    assert threshold == 1.0
    # DCF points: .5, .25, .5667, .3167, .6333, .95 -> 0.25 / 0.5 at threshold 0
    min_dcf, dcf_threshold = compute_mindcf([1.0, 2.0, 2.0], [0.0, 1.0])
    assert min_dcf == pytest.approx(0.5, abs=1e-12)
    assert dcf_threshold == 0.0


def test_perfect_separation():
    eer, threshold = compute_eer([3.0, 4.0], [1.0, 2.0])
    assert (eer, threshold) == (0.0, 2.0)
    assert compute_mindcf([3.0, 4.0], [1.0, 2.0])[0] == 0.0
    assert compute_actdcf([3.0, 4.0], [1.0, 2.0])[0] == pytest.approx(1.0)  # spoofs 1, 2 >= -0.64


@pytest.mark.parametrize("value", [-5.0, 0.0, 5.0])
def test_constant_scores(value):
    bona, spoof = [value] * 2, [value] * 3
    # the official curve rejects the tied bona fide first and reaches frr = far = 1
    eer, threshold = compute_eer(bona, spoof)
    assert eer == 1.0 and threshold == value
    assert compute_mindcf(bona, spoof)[0] == pytest.approx(1.0, abs=1e-12)
    expected_act = 1.9 if value < actdcf_threshold() else 1.0  # miss all (0.95) or accept all (0.5)
    assert compute_actdcf(bona, spoof)[0] == pytest.approx(expected_act, abs=1e-12)
    assert compute_cllr(bona, spoof) == pytest.approx(ref_cllr(bona, spoof), abs=1e-12)


def test_one_versus_one():
    assert compute_eer([1.0], [0.0]) == (0.0, 0.0)
    assert compute_eer([0.0], [1.0]) == (1.0, 0.0)
    assert compute_eer([0.5], [0.5]) == (1.0, 0.5)
    assert compute_mindcf([1.0], [0.0])[0] == 0.0
    assert compute_mindcf([0.0], [1.0])[0] == pytest.approx(1.0, abs=1e-12)


def test_actdcf_threshold_is_inclusive_for_spoof_and_strict_for_bona():
    t = actdcf_threshold()
    assert t == pytest.approx(-math.log(0.95 / 0.5))
    # a bona fide exactly at t is not a miss; a spoof exactly at t is a false alarm
    act, _ = compute_actdcf([t, 10.0], [t, -10.0])
    assert act == pytest.approx(10 * 0.05 * 0.5 / 0.5)


def test_cllr_values():
    assert compute_cllr([0.0], [0.0]) == pytest.approx(1.0, abs=1e-15)  # uninformative LLR
    assert compute_cllr([1.0, 2.0], [2.0, 3.0]) == pytest.approx(ref_cllr([1.0, 2.0], [2.0, 3.0]), abs=1e-14)
    # extreme scores: exact linear tail, no overflow
    with np.errstate(over="raise", invalid="raise"):
        assert compute_cllr([-1000.0], [1000.0]) == pytest.approx(1000 / math.log(2), rel=1e-15)
        assert compute_cllr([1000.0], [-1000.0]) == 0.0


# ---------------------------------------------------------------- randomised, many ties


@pytest.mark.parametrize("seed, n_bona, n_spoof", [(0, 40, 160), (1, 150, 50), (2, 1, 30), (3, 25, 1), (4, 120, 120)])
def test_matches_loop_references_with_ties(seed, n_bona, n_spoof):
    bona, spoof = random_tied(np.random.default_rng(seed), n_bona, n_spoof)
    frr, far, thr = compute_det_curve(bona, spoof)
    r_frr, r_far, r_thr = ref_det(bona, spoof)
    np.testing.assert_array_equal(frr, r_frr)
    np.testing.assert_array_equal(far, r_far)
    np.testing.assert_array_equal(thr[1:], r_thr[1:])
    assert thr[0] == pytest.approx(r_thr[0], abs=1e-15)

    eer, eer_t = compute_eer(bona, spoof)
    r_eer, r_eer_t = ref_eer(bona, spoof)
    assert eer == pytest.approx(r_eer, abs=1e-12) and eer_t == pytest.approx(r_eer_t, abs=1e-15)

    for params in ({}, {"p_spoof": 0.5, "c_miss": 1, "c_fa": 1}, {"p_spoof": 0.2, "c_miss": 3, "c_fa": 2}):
        min_dcf, dcf_t = compute_mindcf(bona, spoof, **params)
        r_min_dcf, r_dcf_t = ref_mindcf(bona, spoof, **params)
        assert min_dcf == pytest.approx(r_min_dcf, abs=1e-12)
        assert dcf_t == pytest.approx(r_dcf_t, abs=1e-15)
        assert compute_actdcf(bona, spoof, **params)[0] == pytest.approx(ref_actdcf(bona, spoof, **params), abs=1e-12)
    assert compute_cllr(bona, spoof) == pytest.approx(ref_cllr(bona, spoof), abs=1e-12)


def test_trial_order_within_a_class_does_not_matter():
    rng = np.random.default_rng(5)
    bona, spoof = random_tied(rng, 80, 90)
    base = (compute_eer(bona, spoof), compute_mindcf(bona, spoof))
    shuffled = (rng.permutation(bona), rng.permutation(spoof))
    assert (compute_eer(*shuffled), compute_mindcf(*shuffled)) == base


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "func", [compute_det_curve, compute_eer, compute_mindcf, compute_actdcf, compute_cllr]
)
def test_empty_class_and_non_finite_raise(func):
    with pytest.raises(ValueError, match="no bona fide scores"):
        func([], [1.0])
    with pytest.raises(ValueError, match="no spoof scores"):
        func([1.0], np.array([]))
    with pytest.raises(ValueError, match="bona fide scores contain 1 NaN"):
        func([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="spoof scores contain 2 NaN or infinite"):
        func([1.0], [float("inf"), -float("inf"), 0.0])


# ---------------------------------------------------------------- legacy t-DCF (ASVspoof 2019)


def test_asv_error_rates_by_hand():
    # ASV EER point: the 3 non-targets rejected, threshold = 0.5 (the highest non-target score);
    # the official rates count scores >= threshold as accepted, so non-target 0.5 is a false alarm.
    pfa, pmiss, pmiss_spoof = asv_error_rates([1.0, 2.0, 3.0], [-1.0, 0.0, 0.5], [-2.0, 0.4, 0.6, 5.0])
    assert pfa == pytest.approx(1 / 3) and pmiss == 0.0 and pmiss_spoof == 0.5


def test_asv_error_rates_need_every_trial_type():
    with pytest.raises(ValueError, match="ASV spoof"):
        asv_error_rates([1.0], [0.0], [])
    with pytest.raises(ValueError, match="ASV non-target"):
        asv_error_rates([1.0], [], [0.0])


def test_cost_model_matches_asvspoof2019_la():
    cm = ASVSPOOF2019_COST_MODEL
    assert (cm.p_spoof, cm.c_miss_asv, cm.c_fa_asv, cm.c_miss_cm, cm.c_fa_cm) == (0.05, 1, 10, 1, 10)
    assert cm.p_tar == pytest.approx(0.9405, abs=1e-15) and cm.p_non == pytest.approx(0.0095, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_tdcf_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    bona, spoof = random_tied(rng, 60, 140)
    tar, non, asv_spoof = rng.normal(2, 1, 50), rng.normal(-2, 1, 70), rng.normal(1, 1.5, 90)
    rates = asv_error_rates(tar, non, asv_spoof)
    min_tdcf, _ = compute_tdcf_legacy(bona, spoof, *rates)
    assert min_tdcf == pytest.approx(ref_min_tdcf(bona, spoof, *rates), abs=1e-12)


def test_min_tdcf_perfect_cm_is_zero_and_weights_by_hand():
    assert compute_tdcf_legacy([1.0, 2.0, 3.0], [0.0, 0.5], 0.0, 0.0, 0.0)[0] == 0.0
    # reversed CM: best point is a trivial one; C1 = 0.9405, C2 = 0.5 -> accept-all costs C2/C2 = 1
    assert compute_tdcf_legacy([0.0, 0.5], [1.0, 2.0, 3.0], 0.0, 0.0, 0.0)[0] == pytest.approx(1.0)


def test_min_tdcf_sanity_checks():
    bona, spoof = [1.0, 2.0, 3.0], [0.0, 0.5]
    with pytest.raises(ValueError, match="sum to one"):
        compute_tdcf_legacy(bona, spoof, 0.1, 0.1, 0.1, TDCFCostModel(0.1, 0.5, 0.1, 1, 10, 1, 10))
    with pytest.raises(ValueError, match="soft scores"):
        compute_tdcf_legacy([1.0, 1.0], [0.0], 0.1, 0.1, 0.1)
    with pytest.raises(ValueError, match="negative weights"):
        compute_tdcf_legacy(bona, spoof, 1.0, 1.0, 0.1)  # C1 = -0.095
    with pytest.raises(ValueError, match="normalisation by zero"):
        compute_tdcf_legacy(bona, spoof, 0.1, 0.1, 1.0)  # C2 = 0
    with pytest.raises(ValueError, match="NaN"):
        compute_tdcf_legacy(bona, [0.0, float("nan")], 0.1, 0.1, 0.1)
    with pytest.warns(UserWarning, match="positive"):
        compute_tdcf_legacy(bona, spoof, 0.0, 0.0, 0.0, TDCFCostModel(0.05, 0.9405, 0.0095, -1, 10, 1, 10))


# ---------------------------------------------------------------- metrics_table


def test_metrics_table_pooled_per_attack_and_per_codec():
    rng = np.random.default_rng(7)
    n = 300
    is_bona = rng.random(n) < 0.4
    scores = np.round(np.where(is_bona, rng.normal(1, 1, n), rng.normal(-1, 1, n)), 1)
    attacks = np.where(is_bona, "bonafide", rng.choice(["A01", "A02", "A03"], n))
    codecs = rng.choice(["-", "C01", "C02"], n)
    table = metrics_table(scores, is_bona, attacks=attacks.tolist(), codecs=codecs.tolist())

    bona, spoof = scores[is_bona].tolist(), scores[~is_bona].tolist()
    assert table["eer"] == pytest.approx(ref_eer(bona, spoof)[0], abs=1e-12)
    assert table["min_dcf"] == pytest.approx(ref_mindcf(bona, spoof)[0], abs=1e-12)
    assert table["act_dcf"] == pytest.approx(ref_actdcf(bona, spoof), abs=1e-12)
    assert table["cllr"] == pytest.approx(ref_cllr(bona, spoof), abs=1e-12)
    assert (table["n_bonafide"], table["n_spoof"]) == (len(bona), len(spoof))

    assert list(table["per_attack"]) == ["A01", "A02", "A03"]  # bona fide label is not an attack
    for attack, row in table["per_attack"].items():
        attack_spoof = scores[~is_bona & (attacks == attack)].tolist()
        assert row["eer"] == pytest.approx(ref_eer(bona, attack_spoof)[0], abs=1e-12)
        assert (row["n_bonafide"], row["n_spoof"]) == (len(bona), len(attack_spoof))
    assert list(table["per_codec"]) == ["-", "C01", "C02"]
    for codec, row in table["per_codec"].items():
        c_bona = scores[is_bona & (codecs == codec)].tolist()
        c_spoof = scores[~is_bona & (codecs == codec)].tolist()
        assert row["eer"] == pytest.approx(ref_eer(c_bona, c_spoof)[0], abs=1e-12)
        assert row["min_dcf"] == pytest.approx(ref_mindcf(c_bona, c_spoof)[0], abs=1e-12)
        assert (row["n_bonafide"], row["n_spoof"]) == (len(c_bona), len(c_spoof))


def test_metrics_table_group_with_one_class_and_no_groups():
    table = metrics_table([2.0, 1.0, 0.0, -1.0], [True, True, False, False], codecs=["C01", "C01", "C01", "C02"])
    assert table["per_attack"] == {}
    assert table["per_codec"]["C02"]["eer"] is None
    assert (table["per_codec"]["C02"]["n_bonafide"], table["per_codec"]["C02"]["n_spoof"]) == (0, 1)
    assert table["per_codec"]["C01"]["eer"] == 0.0


def test_metrics_table_errors():
    with pytest.raises(ValueError, match="no spoof scores"):
        metrics_table([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        metrics_table([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ValueError, match="attack labels"):
        metrics_table([1.0, 2.0], [True, False], attacks=["A01"])


# ---------------------------------------------------------------- real scores, official values


@pytest.mark.skipif(not SCORES_ASV5.is_dir(), reason="shared/data/scores_asv5 not present")
def test_scores_asv5_match_official_package():
    expected = json.loads((SCORES_ASV5 / "expected_metrics.json").read_text())["cm_score"]
    with (SCORES_ASV5 / "dev_scores_label.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    scores = np.array([float(r["cm_score"]) for r in rows])
    labels = np.array([float(r["sasv_label"]) for r in rows])
    bona_labels, spoof_labels = expected["bonafide_labels"], expected["spoof_labels"]
    assert set(np.unique(labels)) == set(bona_labels) | set(spoof_labels)
    is_bona = np.isin(labels, bona_labels)

    table = metrics_table(scores, is_bona)
    assert (table["n_bonafide"], table["n_spoof"]) == (expected["n_bonafide"], expected["n_spoof"])
    for key in ("eer", "min_dcf", "act_dcf", "cllr"):
        assert abs(table[key] - expected[key]) <= 1e-9, key
    bona, spoof = scores[is_bona], scores[~is_bona]
    assert abs(compute_eer(bona, spoof)[0] - expected["eer"]) <= 1e-9
    assert abs(compute_mindcf(bona, spoof)[0] - expected["min_dcf"]) <= 1e-9
    assert abs(compute_actdcf(bona, spoof)[0] - expected["act_dcf"]) <= 1e-9
    assert abs(compute_cllr(bona, spoof) - expected["cllr"]) <= 1e-9

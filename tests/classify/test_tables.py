"""The official 2021 tables against a naive re-statement of the evaluation package's rules: per cell,
select the trials with pandas (spoof-only factors keep every bona fide trial), then the official DET
(`classify.metrics.compute_det_curve`) and the revised t-DCF written out longhand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from classify.metrics import compute_det_curve, compute_eer
from classify.tables import (
    COST_2021,
    POOLED,
    TABLES,
    AsvTrials,
    condition_table,
    corpus_tables,
    eer_sorted,
    read_asv_2021,
)


def naive_cell(frame: pd.DataFrame, spec, r_value: str, c_value: str):
    """The cell's bona fide and spoof scores, selected as the package's queries do."""
    bona = frame["label"] == "bonafide"
    spoof = frame["label"] == "spoof"
    for factor, value in ((spec.rows, r_value), (spec.cols, c_value)):
        if factor is None or value == POOLED:
            continue
        match = frame[factor.column] == value
        spoof &= match
        if not factor.spoof_only:
            bona &= match
    return frame.loc[bona, "score"].to_numpy(), frame.loc[spoof, "score"].to_numpy()


def naive_asv(asv: pd.DataFrame, spec, r_value: str, c_value: str):
    tar, non, spf = (asv["label"] == k for k in ("target", "nontarget", "spoof"))
    for factor, value in ((spec.rows, r_value), (spec.cols, c_value)):
        if factor is None or value == POOLED:
            continue
        match = asv[factor.column] == value
        spf &= match
        if not factor.spoof_only:
            tar &= match
            non &= match
    return (asv.loc[tar, "score"].to_numpy(), asv.loc[non, "score"].to_numpy(), asv.loc[spf, "score"].to_numpy())


def naive_min_tdcf(bona, spoof, tar, non, spf):
    if not (len(bona) and len(spoof) and len(tar) and len(non) and len(spf)):
        return None
    if np.unique(np.concatenate((bona, spoof))).size < 3:
        return None
    _, t = compute_eer(tar, non)
    pmiss = sum(x < t for x in tar) / len(tar)
    pfa = sum(x >= t for x in non) / len(non)
    pfa_spoof = sum(x >= t for x in spf) / len(spf)
    m = COST_2021
    c0 = m.p_tar * m.c_miss * pmiss + m.p_non * m.c_fa * pfa
    c1 = m.p_tar * m.c_miss - (m.p_tar * m.c_miss * pmiss + m.p_non * m.c_fa * pfa)
    c2 = m.p_spoof * m.c_fa_spoof * pfa_spoof
    frr, far, _ = compute_det_curve(bona, spoof)
    if c0 + min(c1, c2) == 0:
        return None
    return float(min((c0 + c1 * a + c2 * b) / (c0 + min(c1, c2)) for a, b in zip(frr, far)))


def la_frame(rng, n: int, levels: int) -> pd.DataFrame:
    """LA-like trials with heavy ties (scores on a few levels), uneven cells, some conditions and
    attacks absent, some values outside the official lists."""
    label = rng.choice(["bonafide", "spoof"], n, p=[0.3, 0.7])
    system = np.where(label == "bonafide", "bonafide", rng.choice(["A07", "A08", "A12", "A19", "A99"], n))
    condition = rng.choice(["C1", "C2", "C3", "C5", "C9"], n, p=[0.4, 0.3, 0.2, 0.09, 0.01])
    score = rng.integers(0, levels, n).astype(float) + 0.5 * (label == "bonafide")
    phase = rng.choice(["eval", "progress", "hidden"], n, p=[0.6, 0.3, 0.1])
    return pd.DataFrame({"score": score, "label": label, "system": system, "condition": condition, "phase": phase})


def asv_frame(rng, n: int) -> pd.DataFrame:
    label = rng.choice(["target", "nontarget", "spoof"], n, p=[0.5, 0.2, 0.3])
    return pd.DataFrame({
        "score": rng.integers(0, 6, n) + 1.5 * (label == "target") + 0.7 * (label == "spoof"),
        "label": label,
        "system": np.where(label == "spoof", rng.choice(["A07", "A08", "A12", "A19"], n), "bonafide"),
        "condition": rng.choice(["C1", "C2", "C3", "C5"], n),
        "phase": "eval",
    })


@pytest.mark.parametrize("seed, n, levels", [(0, 400, 4), (1, 60, 2), (2, 2000, 50), (3, 25, 3)])
def test_la_table_equals_the_naive_restatement(seed, n, levels):
    rng = np.random.default_rng(seed)
    frame = la_frame(rng, n, levels)
    asv = asv_frame(rng, 300)
    spec = TABLES["asv21la"][0]
    table = condition_table(frame, spec, AsvTrials(asv, "test"))
    assert table["columns"][-1] == POOLED and table["rows"][-1] == POOLED
    assert len(table["eer"]) == 14 and len(table["eer"][0]) == 8
    for i, r in enumerate(table["row_values"]):
        for j, c in enumerate(table["column_values"]):
            bona, spoof = naive_cell(frame, spec, r, c)
            assert table["n_bonafide"][i][j] == len(bona) and table["n_spoof"][i][j] == len(spoof)
            want = compute_eer(bona, spoof)[0] if len(bona) and len(spoof) else None
            assert table["eer"][i][j] == want, (r, c)  # bit-exact, None where a class is empty
            got, expected = table["min_tdcf"][i][j], naive_min_tdcf(bona, spoof, *naive_asv(asv, spec, r, c))
            assert (got is None and expected is None) or math.isclose(got, expected, rel_tol=1e-12), (r, c)


def test_df_table_keeps_every_bona_fide_in_a_vocoder_row():
    rng = np.random.default_rng(5)
    n = 500
    label = rng.choice(["bonafide", "spoof"], n)
    frame = pd.DataFrame({
        "score": rng.normal(size=n).round(1) + (label == "bonafide"),
        "label": label,
        "vocoder": np.where(label == "bonafide", "bonafide", rng.choice(TABLES["asv21df"][0].rows.values, n)),
        "condition": rng.choice([f"C{k}" for k in range(1, 10)], n),
    })
    spec = TABLES["asv21df"][0]
    table = condition_table(frame, spec)
    assert "min_tdcf" not in table
    for i, r in enumerate(table["row_values"]):
        for j, c in enumerate(table["column_values"]):
            bona, spoof = naive_cell(frame, spec, r, c)
            assert table["eer"][i][j] == compute_eer(bona, spoof)[0]
            assert table["n_bonafide"][i][j] == int(((frame["label"] == "bonafide") &
                                                     ((frame["condition"] == c) | (c == POOLED))).sum())


def test_one_class_and_empty_cells_and_all_tied_scores():
    assert eer_sorted(np.array([]), np.array([1.0])) != eer_sorted(np.array([]), np.array([1.0]))  # NaN
    tied = np.zeros(5)
    assert eer_sorted(tied, tied[:3]) == compute_eer(tied, tied[:3])[0] == 1.0  # the official tie rule
    frame = pd.DataFrame({"score": [0.0, 0.0, 1.0], "label": ["bonafide", "spoof", "spoof"], "system": ["bonafide", "A07", "A08"],
                          "condition": ["C1", "C2", "C1"]})
    table = condition_table(frame, TABLES["asv21la"][0])
    assert table["min_tdcf"] is None and "EER only" in table["note"]
    c2 = table["column_values"].index("C2")
    assert table["eer"][0][c2] is None  # A07 x C2: no bona fide in C2
    assert table["eer"][-1][-1] == compute_eer([0.0], [0.0, 1.0])[0]


def test_phases_are_apart_and_speaker_tables_for_itw():
    rng = np.random.default_rng(7)
    frame = la_frame(rng, 300, 10)
    result = corpus_tables("asv21la", frame)
    assert set(result["phases"]) == {"eval", "progress", "hidden"}
    for phase, part in result["phases"].items():
        sub = frame[frame["phase"] == phase]
        want = compute_eer(sub.loc[sub["label"] == "bonafide", "score"], sub.loc[sub["label"] == "spoof", "score"])[0]
        assert part["pooled"]["eer"] == want
        assert part["tables"]["attack x condition"]["eer"][-1][-1] == want
    itw = pd.DataFrame({"score": rng.normal(size=40), "label": ["bonafide", "spoof"] * 20,
                        "speaker": ["Ann Lee"] * 10 + ["Bo"] * 30})
    result = corpus_tables("itw", itw)
    table = result["tables"]["speaker"]
    assert table["rows"] == ["Ann Lee", "Bo", POOLED]
    sub = itw[itw["speaker"] == "Ann Lee"]
    assert table["eer"][0][0] == compute_eer(sub.loc[sub["label"] == "bonafide", "score"],
                                             sub.loc[sub["label"] == "spoof", "score"])[0]


def test_read_asv_2021_joins_line_by_line(tmp_path):
    keys = tmp_path / "trial_metadata.txt"
    scores = tmp_path / "score.txt"
    keys.write_text("LA_0001 LA_E_1 alaw ita_tx bonafide target notrim eval\nLA_0001 LA_E_2 none - A07 spoof notrim progress\n")
    scores.write_text("LA_0001 LA_E_1 3.5\nLA_0001 LA_E_2 -1\n")
    asv = read_asv_2021(str(keys), str(scores), {"alaw": "C2", "none": "C1"})
    assert asv.frame["condition"].tolist() == ["C2", "C1"] and asv.frame["score"].tolist() == [3.5, -1.0]
    scores.write_text("LA_0001 LA_E_1 3.5\nLA_0001 LA_E_3 -1\n")
    with pytest.raises(ValueError, match=r"score.txt:2: trial 'LA_E_3', but .*trial_metadata.txt:2 is 'LA_E_2'"):
        read_asv_2021(str(keys), str(scores), {})


def test_mlaad_model_table_keeps_every_bona_fide_and_codecfake_conditions_select_both():
    rng = np.random.default_rng(11)
    n = 200
    label = rng.choice(["bonafide", "spoof"], n)
    frame = pd.DataFrame({"score": rng.integers(0, 5, n) + 0.5 * (label == "bonafide"), "label": label,
                          "model": np.where(label == "bonafide", "-", rng.choice(["m1", "m2", "m3"], n)),
                          "language": rng.choice(["de", "en"], n), "condition": rng.choice(["C1", "A2"], n)})
    tables = corpus_tables("mlaad", frame)["tables"]
    assert tables["model"]["rows"] == ["m1", "m2", "m3", POOLED]
    for spec in TABLES["mlaad"] + TABLES["codecfake"]:
        table = (tables if spec in TABLES["mlaad"] else corpus_tables("codecfake", frame)["tables"])[spec.title]
        for i, r in enumerate(table["row_values"]):
            bona, spoof = naive_cell(frame, spec, r, POOLED)
            assert table["eer"][i][0] == compute_eer(bona, spoof)[0]
            assert table["n_bonafide"][i][0] == len(bona)
    assert tables["model"]["n_bonafide"][0][0] == int((label == "bonafide").sum())

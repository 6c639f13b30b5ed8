"""`pipeline metrics` through click's test runner: table, JSON, t-DCF, and input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.commands.metrics import command

# Hand-worked case (see tests/classify/test_metrics.py): bona fide [1, 2, 2], spoof [0, 1]
# -> EER 5/12 at threshold 1 (ties rejected bona fide first), minDCF 0.5.
PROTOCOL_2019 = """\
LA_0001 LA_E_1 - - bonafide
LA_0001 LA_E_2 - - bonafide
LA_0002 LA_E_3 - - bonafide
LA_0002 LA_E_4 - A07 spoof
LA_0003 LA_E_5 - A08 spoof
"""
SCORES_2019 = "LA_E_5 1\nLA_E_1 1\nLA_E_2 2\nLA_E_3 2\nLA_E_4 0\n"

PROTOCOL_ASV5 = """\
E_1 E_01 F C01 1 E_03 - bonafide bonafide -
E_1 E_02 F C01 1 E_04 AC1 A11 spoof -
E_1 E_03 F - - - - bonafide bonafide -
E_2 E_04 M - - - AC1 A11 spoof -
E_2 E_05 M - - - AC2 A12 spoof -
E_2 E_06 M - - - - bonafide bonafide -
"""
SCORES_ASV5 = "filename\tcm-score\nE_01\t3.0\nE_02\t-2.0\nE_03\t1.0\nE_04\t1.5\nE_05\t-4.0\nE_06\t0.5\n"


def files(tmp_path: Path, scores: str, keys: str) -> list[str]:
    (tmp_path / "scores.txt").write_text(scores)
    (tmp_path / "keys.txt").write_text(keys)
    return ["--scores", str(tmp_path / "scores.txt"), "--keys", str(tmp_path / "keys.txt")]


def run(args: list[str]):
    return CliRunner().invoke(command, args)


def test_command_is_named_metrics():
    assert command.name == "metrics"


def test_json_values_for_hand_worked_case(tmp_path):
    result = run(files(tmp_path, SCORES_2019, PROTOCOL_2019) + ["--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["eer"] == pytest.approx(5 / 12, abs=1e-15) and out["eer_threshold"] == 1.0
    assert out["min_dcf"] == pytest.approx(0.5, abs=1e-12)
    # actDCF threshold -0.642: no bona fide missed, both spoofs (0, 1) accepted -> 0.5 / 0.5
    assert out["act_dcf"] == pytest.approx(1.0, abs=1e-12)
    cllr = 0.5 * (
        (math.log1p(math.exp(-1)) + 2 * math.log1p(math.exp(-2))) / 3
        + (math.log1p(math.exp(0)) + math.log1p(math.exp(1))) / 2
    ) / math.log(2)
    assert out["cllr"] == pytest.approx(cllr, abs=1e-12)
    assert (out["n_bonafide"], out["n_spoof"]) == (3, 2)
    assert out["keys_format"] == "asvspoof2019-la" and out["scores_format"] == "asvspoof2019"
    # per attack: all 3 bona fide vs that attack. A07 (score 0) is separated. A08 (score 1) ties
    # bona fide 1: frr 0,1/3,1/3,2/3,1 and far 1,1,0,0,0 -> closest at (1/3, 0): EER 1/6
    assert out["per_attack"]["A07"]["eer"] == 0.0
    assert out["per_attack"]["A08"]["eer"] == pytest.approx(1 / 6, abs=1e-15)
    assert out["per_attack"]["A08"]["n_bonafide"] == 3 and out["per_attack"]["A08"]["n_spoof"] == 1
    assert out["per_codec"] == {} and "min_tdcf" not in out


def test_table_output_with_codecs(tmp_path):
    result = run(files(tmp_path, SCORES_ASV5, PROTOCOL_ASV5))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "3 bona fide, 3 spoof" in text
    # bona fide 3, 1, 0.5 vs spoof -2, 1.5, -4: EER point rejects -4, -2, 0.5 -> frr 1/3, far 1/3
    assert "EER        33.333 %" in text
    assert "Per attack" in text and "Per codec" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert rows["A12"][1:4] == ["3", "1", "0.000"]  # all bona fide vs the A12 spoof (-4)
    assert rows["C01"][1:4] == ["1", "1", "0.000"]  # within C01: bona 3.0 vs spoof -2.0
    assert rows["-"][1:3] == ["2", "2"]


def test_min_tdcf_with_asv_scores(tmp_path):
    args = files(tmp_path, SCORES_2019, PROTOCOL_2019)
    asv = tmp_path / "asv.txt"
    # ASV EER threshold 0.5 -> Pfa 1/3 (the 0.5 non-target), Pmiss 0, Pmiss_spoof 1/2
    asv.write_text(
        "LA_0001 target 1\nLA_0001 target 2\nLA_0001 target 3\n"
        "LA_0002 nontarget -1\nLA_0002 nontarget 0\nLA_0002 nontarget 0.5\n"
        "A07 spoof -2\nA07 spoof 0.4\nA08 spoof 0.6\nA08 spoof 5\n"
    )
    result = run(args + ["--asv-scores", str(asv), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    rates = out["asv_error_rates"]
    assert (rates["pfa_asv"], rates["pmiss_asv"], rates["pmiss_spoof_asv"]) == pytest.approx((1 / 3, 0, 0.5))
    c1 = 0.95 * 0.99 - 0.95 * 0.01 * 10 / 3
    c2 = 10 * 0.05 * 0.5
    # CM DET: (frr, far) = (0,1) (0,.5) (1/3,.5) (1/3,0) (2/3,0) (1,0); best normalised cost:
    expected = min((c1 * m + c2 * f) / min(c1, c2) for m, f in [(0, 1), (0, 0.5), (1 / 3, 0.5), (1 / 3, 0), (2 / 3, 0), (1, 0)])
    assert out["min_tdcf"] == pytest.approx(expected, abs=1e-12)
    table = run(args + ["--asv-scores", str(asv)])
    assert table.exit_code == 0 and f"min t-DCF  {expected:.5f}" in table.output


@pytest.mark.parametrize(
    "scores, keys, message",
    [
        ("LA_E_1 1\nLA_E_2 2\n", PROTOCOL_2019, "no score for 3 of 5 utterances keyed in"),
        (SCORES_2019.replace("LA_E_2 2", "LA_E_2 high"), PROTOCOL_2019, "scores.txt:3: score 'high' is not a number"),
        (SCORES_2019 + "LA_E_1 3\n", PROTOCOL_2019, "scores.txt:6: duplicate utterance id 'LA_E_1'"),
        (SCORES_2019, PROTOCOL_2019.replace(" A07 spoof", " A07 fake"), "keys.txt:4: key 'fake'"),
        ("LA_E_1 1\nLA_E_2 2\n", "LA_0001 LA_E_1 - - bonafide\nLA_0001 LA_E_2 - - bonafide\n", "keys.txt: no spoof scores"),
    ],
)
def test_bad_input_fails_with_file_and_problem(tmp_path, scores, keys, message):
    result = run(files(tmp_path, scores, keys))
    assert result.exit_code != 0
    assert message in result.output


def test_bad_asv_file_and_missing_file(tmp_path):
    args = files(tmp_path, SCORES_2019, PROTOCOL_2019)
    (tmp_path / "asv.txt").write_text("LA_0001 target 1\nLA_0002 nontarget 0\n")
    result = run(args + ["--asv-scores", str(tmp_path / "asv.txt")])
    assert result.exit_code != 0 and "asv.txt: no ASV trials of type spoof" in result.output
    result = run(["--scores", str(tmp_path / "absent.txt"), "--keys", str(tmp_path / "keys.txt")])
    assert result.exit_code == 2 and "absent.txt" in result.output


def test_tdcf_rejects_binary_cm_decisions(tmp_path):
    decisions = "LA_E_1 1\nLA_E_2 1\nLA_E_3 1\nLA_E_4 0\nLA_E_5 0\n"
    args = files(tmp_path, decisions, PROTOCOL_2019)
    (tmp_path / "asv.txt").write_text("LA_0001 target 1\nLA_0002 nontarget 0\nA07 spoof 0.5\n")
    result = run(args + ["--asv-scores", str(tmp_path / "asv.txt")])
    assert result.exit_code != 0
    assert "soft scores" in result.output and "scores.txt" in result.output and "asv.txt" in result.output

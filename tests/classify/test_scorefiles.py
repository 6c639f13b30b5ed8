"""Score and key files: official formats, detection, joining, and error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classify.scorefiles import (
    ScoreFileError,
    join_scores_keys,
    load_trials,
    read_asv_scores,
    read_keys,
    read_scores,
    write_scores,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared/data"
LA19_PROTOCOLS = SHARED_DATA / "offla19/LA/ASVspoof2019_LA_cm_protocols"
ASV5 = SHARED_DATA / "offla5"

LA19_PROTOCOL = """\
LA_0079 LA_T_1138215 - - bonafide
LA_0079 LA_T_1271820 - A01 spoof
LA_0080 LA_T_1272637 - A02 spoof
LA_0080 LA_T_1276960 - - bonafide
"""

ASV5_PROTOCOL = """\
E_3882 E_0000000000 F C03 1 E_0000000060 AC2 A09 spoof -
E_9563 E_0000000001 F C03 1 E_0000000263 - bonafide bonafide -
E_3882 E_0000000002 F - - - - bonafide bonafide -
E_3882 E_0000000003 F - - - AC1 A07 spoof -
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- score files


@pytest.mark.parametrize("fmt", ["asvspoof5", "asvspoof2019"])
def test_write_read_roundtrip_is_exact(tmp_path, fmt):
    rng = np.random.default_rng(0)
    ids = [f"E_{i:010d}" for i in range(50)]
    scores = rng.normal(size=50) * 10.0 ** rng.integers(-8, 8, 50)
    path = write_scores(tmp_path / "s.txt", ids, scores, fmt=fmt)
    read = read_scores(path)
    assert read.format == fmt and read.utt_ids == ids
    np.testing.assert_array_equal(read.scores, scores)


def test_written_layouts_are_the_official_ones(tmp_path):
    write_scores(tmp_path / "a.tsv", ["E_1", "E_2"], [0.5, -1.25])
    assert (tmp_path / "a.tsv").read_text() == "filename\tcm-score\nE_1\t0.5\nE_2\t-1.25\n"
    write_scores(tmp_path / "b.txt", ["LA_E_1", "LA_E_2"], [0.5, -1.25], fmt="asvspoof2019")
    assert (tmp_path / "b.txt").read_text() == "LA_E_1 0.5\nLA_E_2 -1.25\n"


def test_read_asvspoof5_sasv_style_file_uses_cm_score_column(tmp_path):
    path = write(
        tmp_path,
        "sasv.tsv",
        "spk\tfilename\tcm-score\tasv-score\tsasv-score\n"
        "E_0101\tE_0000000001\t4.5\t-1.0\t1.8\n"
        "E_0101\tE_0000000002\t-3\t2.0\t0.1\n",
    )
    read = read_scores(path)
    assert read.utt_ids == ["E_0000000001", "E_0000000002"]
    np.testing.assert_array_equal(read.scores, [4.5, -3.0])


def test_read_2019_scores_tolerates_blank_lines_crlf_and_tabs(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"LA_E_1 1.5\r\n\r\nLA_E_2\t-2e-3\r\n")
    read = read_scores(path)
    assert read.format == "asvspoof2019" and read.utt_ids == ["LA_E_1", "LA_E_2"]
    np.testing.assert_array_equal(read.scores, [1.5, -0.002])


@pytest.mark.parametrize(
    "text, message",
    [
        ("LA_E_1 0.1\nLA_E_2 abc\n", r"s\.txt:2: score 'abc' is not a number"),
        ("LA_E_1 0.1\nLA_E_2 nan\n", r"s\.txt:2: score 'nan' is not finite"),
        ("LA_E_1 0.1\nLA_E_2 0.3 extra\n", r"s\.txt:2: expected 'UTT_ID SCORE' \(2 fields\)"),
        ("LA_E_1 0.1\nLA_E_2 0.2\nLA_E_1 0.3\n", r"s\.txt:3: duplicate utterance id 'LA_E_1' \(first on line 1\)"),
        ("filename\tcm-score\nE_1\t0.1\nE_2\n", r"s\.txt:3: expected 2 fields like the header, got 1"),
        ("trial\tcm-score\nE_1\t0.1\n", r"s\.txt:1: header has 'cm-score' but no 'filename' column"),
        ("filename\tcm-score\n", r"s\.txt: no scores after the header"),
        ("\n\n", r"s\.txt: file is empty"),
    ],
)
def test_read_scores_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ScoreFileError, match=message):
        read_scores(write(tmp_path, "s.txt", text))


def test_read_scores_missing_file(tmp_path):
    with pytest.raises(ScoreFileError, match="nope.txt: cannot read"):
        read_scores(tmp_path / "nope.txt")


def test_write_scores_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2 utterance ids but 1 scores"):
        write_scores(tmp_path / "s", ["a", "b"], [1.0])
    with pytest.raises(ValueError, match="not unique"):
        write_scores(tmp_path / "s", ["a", "a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        write_scores(tmp_path / "s", ["a"], [float("nan")])
    with pytest.raises(ValueError, match="whitespace"):
        write_scores(tmp_path / "s", ["a b"], [1.0])
    with pytest.raises(ValueError, match="unknown score format"):
        write_scores(tmp_path / "s", ["a"], [1.0], fmt="csv")


# ---------------------------------------------------------------- key files


def test_read_asvspoof2019_la_protocol(tmp_path):
    keys = read_keys(write(tmp_path, "p.txt", LA19_PROTOCOL))
    assert keys.format == "asvspoof2019-la"
    assert keys.utt_ids == ["LA_T_1138215", "LA_T_1271820", "LA_T_1272637", "LA_T_1276960"]
    assert keys.is_bonafide.tolist() == [True, False, False, True]
    assert keys.attacks == ["-", "A01", "A02", "-"] and keys.codecs is None


def test_read_asvspoof5_protocol(tmp_path):
    keys = read_keys(write(tmp_path, "p.tsv", ASV5_PROTOCOL))
    assert keys.format == "asvspoof5-protocol"
    assert keys.utt_ids == [f"E_000000000{i}" for i in range(4)]
    assert keys.is_bonafide.tolist() == [False, True, True, False]
    assert keys.attacks == ["A09", "bonafide", "bonafide", "A07"]
    assert keys.codecs == ["C03", "C03", "-", "-"]


@pytest.mark.parametrize("sep", ["\t", ",", " "])
def test_read_asvspoof5_key_table(tmp_path, sep):
    rows = [["filename", "cm-label", "attack", "codec"], ["E_1", "bonafide", "bonafide", "C01"], ["E_2", "spoof", "A11", "-"]]
    keys = read_keys(write(tmp_path, "k.txt", "".join(sep.join(r) + "\n" for r in rows)))
    assert keys.format == "asvspoof5-key"
    assert keys.utt_ids == ["E_1", "E_2"] and keys.is_bonafide.tolist() == [True, False]
    assert keys.attacks == ["bonafide", "A11"] and keys.codecs == ["C01", "-"]


def test_read_minimal_key_table_in_official_layout(tmp_path):
    keys = read_keys(write(tmp_path, "k.tsv", "filename\tcm-label\nE_000001\tbonafide\nE_000002\tspoof\n"))
    assert keys.attacks is None and keys.codecs is None
    assert keys.is_bonafide.tolist() == [True, False]


@pytest.mark.parametrize(
    "text, message",
    [
        (LA19_PROTOCOL + "LA_0080 LA_T_9 - A02\n", r"p\.txt:5: expected 5 fields \(asvspoof2019-la\), got 4"),
        (LA19_PROTOCOL + "LA_0080 LA_T_1138215 - - bonafide\n", r"p\.txt:5: duplicate utterance id 'LA_T_1138215' \(first on line 1\)"),
        ("LA_0079 LA_T_1 - - genuine\n", r"p\.txt:1: key 'genuine' is neither 'bonafide' nor 'spoof'"),
        ("a b c\n", r"p\.txt:1: not a known key format: 3 field\(s\)"),
        ("name\tcm-label\nE_1\tspoof\n", r"p\.txt:1: key header has a label column but no 'filename' column"),
        ("filename\tcm-label\n", r"p\.txt: no trials after the header"),
    ],
)
def test_read_keys_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ScoreFileError, match=message):
        read_keys(write(tmp_path, "p.txt", text))


@pytest.mark.skipif(not LA19_PROTOCOLS.is_dir(), reason="offla19 corpus not present")
def test_real_asvspoof2019_layout_protocol():
    keys = read_keys(LA19_PROTOCOLS / "ASVspoof2019.LA.cm.dev.trl.txt")
    assert keys.format == "asvspoof2019-la" and len(keys.utt_ids) == 598
    assert set(np.asarray(keys.attacks)[keys.is_bonafide]) == {"-"}
    assert all(a.startswith("A") for a in np.asarray(keys.attacks)[~keys.is_bonafide])


@pytest.mark.skipif(not ASV5.is_dir(), reason="offla5 corpus not present")
def test_real_asvspoof5_layout_protocol():
    keys = read_keys(ASV5 / "ASVspoof5.eval.track_1.tsv")
    assert keys.format == "asvspoof5-protocol"
    assert (int(keys.is_bonafide.sum()), int((~keys.is_bonafide).sum())) == (200, 200)
    assert set(keys.codecs) == {"-", "C01", "C02", "C03"}


# ---------------------------------------------------------------- joining


def test_join_orders_by_keys_and_carries_conditions(tmp_path):
    keys = write(tmp_path, "p.tsv", ASV5_PROTOCOL)
    ids = [f"E_000000000{i}" for i in (3, 1, 0, 2)]
    write_scores(tmp_path / "s.tsv", ids, [3.0, 1.0, 0.0, 2.0])
    trials = load_trials(tmp_path / "s.tsv", keys)
    assert trials.utt_ids == [f"E_000000000{i}" for i in range(4)]
    np.testing.assert_array_equal(trials.scores, [0.0, 1.0, 2.0, 3.0])
    assert trials.is_bonafide.tolist() == [False, True, True, False]
    assert trials.attacks[0] == "A09" and trials.codecs[0] == "C03"


def test_join_reports_missing_scores_with_count_and_examples(tmp_path):
    keys = read_keys(write(tmp_path, "p.txt", LA19_PROTOCOL))
    scores = read_scores(write(tmp_path, "s.txt", "LA_T_1138215 0.3\n"))
    with pytest.raises(ScoreFileError) as err:
        join_scores_keys(scores, keys)
    message = str(err.value)
    assert "s.txt: no score for 3 of 4 utterances keyed in" in message and "p.txt" in message
    assert "LA_T_1271820, LA_T_1272637, LA_T_1276960" in message


def test_join_reports_scores_without_key(tmp_path):
    keys = read_keys(write(tmp_path, "p.txt", LA19_PROTOCOL))
    ids = keys.utt_ids + [f"LA_X_{i}" for i in range(7)]
    scores = read_scores(write_scores(tmp_path / "s.txt", ids, np.arange(11.0), fmt="asvspoof2019"))
    with pytest.raises(ScoreFileError, match=r"s\.txt: 7 scored utterances are not in .*p\.txt \(e\.g\. LA_X_0, .*LA_X_4, \.\.\.\)"):
        join_scores_keys(scores, keys)


# ---------------------------------------------------------------- ASV scores (2019 t-DCF)


def test_read_asv_scores_splits_by_key(tmp_path):
    path = write(tmp_path, "asv.txt", "LA_0001 target 2.5\nLA_0001 nontarget -1\nA07 spoof 0.25\nLA_0002 target 3\n")
    asv = read_asv_scores(path)
    np.testing.assert_array_equal(asv.target, [2.5, 3.0])
    np.testing.assert_array_equal(asv.nontarget, [-1.0])
    np.testing.assert_array_equal(asv.spoof, [0.25])


@pytest.mark.parametrize(
    "text, message",
    [
        ("LA_0001 target 2.5\nLA_0001 impostor 1\n", r"asv\.txt:2: ASV key 'impostor' is not one of target, nontarget, spoof"),
        ("LA_0001 target x\n", r"asv\.txt:1: score 'x' is not a number"),
        ("LA_0001 target 1 2\n", r"asv\.txt:1: expected 'SOURCE KEY SCORE' \(3 fields\), got 4"),
        ("LA_0001 target 1\nLA_0001 nontarget 0\n", r"asv\.txt: no ASV trials of type spoof"),
    ],
)
def test_read_asv_scores_errors(tmp_path, text, message):
    with pytest.raises(ScoreFileError, match=message):
        read_asv_scores(write(tmp_path, "asv.txt", text))

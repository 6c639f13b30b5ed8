"""Dataset registry, ASVspoof 2019 LA and ASVspoof 5 readers, and the shared row rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from extract.datasets import (
    COLUMNS,
    DatasetError,
    get_dataset,
    safe_join,
    validate_table,
)
from extract.datasets.base import PathEscapeError

PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
ASV19_FILES = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
ASV5_FILES = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
ASV5_DIRS = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}


def write_flac(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, dtype=np.int16), 16000, format="FLAC", subtype="PCM_16")


def make_asv19(root: Path, lines: dict[str, list[str]]) -> Path:
    """An ASVspoof 2019 LA tree under ``root/LA``: the given protocols, a FLAC per valid line."""
    la = root / "LA"
    (la / PROTOCOL_DIR).mkdir(parents=True)
    for split, split_lines in lines.items():
        (la / PROTOCOL_DIR / ASV19_FILES[split]).write_text("".join(f"{x}\n" for x in split_lines))
        for line in split_lines:
            fields = line.split()
            if len(fields) == 5 and "/" not in fields[1]:
                write_flac(la / f"ASVspoof2019_LA_{split}" / "flac" / f"{fields[1]}.flac")
    return root


ASV19_LINES = {
    "train": ["LA_0079 LA_T_1000001 - - bonafide", "LA_0079 LA_T_1000002 - A01 spoof"],
    "dev": ["LA_0070 LA_D_1000001 - A02 spoof", "LA_0070 LA_D_1000002 - - bonafide"],
    "eval": ["LA_0001 LA_E_1000001 - A19 spoof", "LA_0001 LA_E_1000002 - - bonafide"],
}


@pytest.fixture
def asv19_root(tmp_path: Path) -> Path:
    return make_asv19(tmp_path / "asv19", ASV19_LINES)


def test_unknown_dataset_error_lists_choices() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'nope'") as info:
        get_dataset("nope")
    for name in ("asv19", "asv5", "manifest", "demo"):
        assert name in str(info.value)


def test_asv19_reads_protocols_and_maps_systems(asv19_root: Path) -> None:
    loaded = get_dataset("asv19").load(asv19_root)
    table = loaded.table
    assert tuple(table.columns) == COLUMNS
    assert loaded.problems == []
    assert "ASVspoof 2019 LA" in loaded.description
    assert list(table["split"]) == ["train", "train", "dev", "dev", "eval", "eval"]
    assert list(table["system"]) == ["bonafide", "A01", "A02", "bonafide", "A19", "bonafide"]
    assert list(table["label"]) == ["bonafide", "spoof", "spoof", "bonafide", "spoof", "bonafide"]
    assert set(table["codec"]) == {"-"}
    assert table["duration"].isna().all()
    first = table.iloc[0]
    assert first["speaker"] == "LA_0079"
    expected = asv19_root / "LA/ASVspoof2019_LA_train/flac/LA_T_1000001.flac"
    assert Path(first["path"]) == expected.resolve()
    assert all(Path(p).is_file() for p in table["path"])


def test_asv19_accepts_la_folder_as_root(asv19_root: Path) -> None:
    outer = get_dataset("asv19").load(asv19_root).table
    inner = get_dataset("asv19").load(asv19_root / "LA").table
    pd.testing.assert_frame_equal(outer, inner)


def test_asv19_split_selection(asv19_root: Path) -> None:
    dataset = get_dataset("asv19")
    assert set(dataset.load(asv19_root, ["eval"]).table["split"]) == {"eval"}
    both = dataset.load(asv19_root, ["eval", "train"]).table
    assert list(dict.fromkeys(both["split"])) == ["train", "eval"]  # canonical order
    assert set(dataset.load(asv19_root, "dev").table["split"]) == {"dev"}
    with pytest.raises(DatasetError, match="valid: train, dev, eval"):
        dataset.load(asv19_root, ["test"])


def test_missing_protocol_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = make_asv19(tmp_path / "asv19", {"train": ASV19_LINES["train"]})
    assert len(get_dataset("asv19").load(root, ["train"]).table) == 2
    with pytest.raises(DatasetError, match=r"ASVspoof2019\.LA\.cm\.dev\.trl\.txt"):
        get_dataset("asv19").load(root)
    with pytest.raises(DatasetError, match="ASVspoof5.train.tsv"):
        get_dataset("asv5").load(root)
    with pytest.raises(DatasetError, match="not found"):
        get_dataset("asv19").load(tmp_path / "nowhere")


def test_malformed_lines_become_problems_naming_file_and_line(tmp_path: Path) -> None:
    lines = [
        "LA_0079 LA_T_1000001 - - bonafide",
        "LA_0079 LA_T_1000002 - A01",
        "",
        "LA_0079 LA_T_1000003 - A01 spoofed",
        "LA_0079 LA_T_1000004 - A02 spoof extra",
        "LA_0079 LA_T_1000005 - A03 bonafide",
        "LA_0079 LA_T_1000006 - A04 spoof",
    ]
    root = make_asv19(tmp_path / "asv19", {"train": lines})
    loaded = get_dataset("asv19").load(root, ["train"])
    assert list(loaded.table["utt_id"]) == ["LA_T_1000001", "LA_T_1000006"]
    protocol = root / "LA" / PROTOCOL_DIR / ASV19_FILES["train"]
    by_line = {int(p.reason.split(":")[1]): p for p in loaded.problems}
    assert sorted(by_line) == [2, 4, 5, 6]
    assert all(p.reason.startswith(f"{protocol}:") for p in loaded.problems)
    assert all(p.stage == "dataset" for p in loaded.problems)
    assert "expected 5 columns" in by_line[2].reason and by_line[2].path == str(protocol)
    assert "unknown key 'spoofed'" in by_line[4].reason and by_line[4].utt_id == "LA_T_1000003"
    assert "found 6" in by_line[5].reason
    assert "contradicts system 'A03'" in by_line[6].reason


def test_duplicate_ids_keep_the_first(tmp_path: Path) -> None:
    lines = {
        "train": ["S1 LA_X_1 - - bonafide", "S1 LA_X_1 - A01 spoof"],
        "dev": ["S2 LA_X_1 - - bonafide", "S2 LA_X_2 - A01 spoof"],
    }
    root = make_asv19(tmp_path / "asv19", lines)
    loaded = get_dataset("asv19").load(root, ["train", "dev"])
    assert list(loaded.table["utt_id"]) == ["LA_X_1", "LA_X_2"]
    assert loaded.table["system"].iloc[0] == "bonafide"
    assert [p.utt_id for p in loaded.problems] == ["LA_X_1", "LA_X_1"]
    train_protocol = root / "LA" / PROTOCOL_DIR / ASV19_FILES["train"]
    assert all(f"first at {train_protocol}:1" in p.reason for p in loaded.problems)
    dev_protocol = root / "LA" / PROTOCOL_DIR / ASV19_FILES["dev"]
    assert loaded.problems[1].reason.startswith(f"{dev_protocol}:1:")


def test_utterance_id_escaping_root_is_a_problem(tmp_path: Path) -> None:
    lines = ["S1 ../../../../../../etc/passwd - A01 spoof", "S1 LA_T_1 - - bonafide"]
    root = make_asv19(tmp_path / "asv19", {"train": lines})
    loaded = get_dataset("asv19").load(root, ["train"])
    assert list(loaded.table["utt_id"]) == ["LA_T_1"]
    (problem,) = loaded.problems
    assert problem.utt_id == "../../../../../../etc/passwd"
    assert ":1:" in problem.reason and "outside" in problem.reason


def test_symlink_leaving_root_is_a_problem(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.flac"
    write_flac(outside)
    lines = ["S1 LA_T_1 - - bonafide", "S1 LA_T_2 - A01 spoof", "S1 LA_T_3 - A02 spoof"]
    root = make_asv19(tmp_path / "asv19", {"train": lines})
    flac = root / "LA/ASVspoof2019_LA_train/flac"
    (flac / "LA_T_2.flac").unlink()
    (flac / "LA_T_2.flac").symlink_to(outside)
    (flac / "LA_T_3.flac").unlink()
    (flac / "LA_T_3.flac").symlink_to(flac / "LA_T_1.flac")  # inside the root: fine
    loaded = get_dataset("asv19").load(root, ["train"])
    assert list(loaded.table["utt_id"]) == ["LA_T_1", "LA_T_3"]
    assert loaded.table["path"].iloc[1] == str((flac / "LA_T_1.flac").resolve())
    (problem,) = loaded.problems
    assert problem.utt_id == "LA_T_2" and str(outside.resolve()) in problem.reason


def test_symlinked_audio_folder_leaving_root_is_a_problem(tmp_path: Path) -> None:
    root = make_asv19(tmp_path / "asv19", {"train": ["S1 LA_T_1 - - bonafide"]})
    folder = root / "LA/ASVspoof2019_LA_train/flac"
    folder.rename(tmp_path / "moved")
    folder.symlink_to(tmp_path / "moved")
    loaded = get_dataset("asv19").load(root, ["train"])
    assert loaded.table.empty and len(loaded.problems) == 1


def test_non_utf8_line_is_a_problem(tmp_path: Path) -> None:
    root = make_asv19(tmp_path / "asv19", {"train": ["S1 LA_T_1 - - bonafide"]})
    protocol = root / "LA" / PROTOCOL_DIR / ASV19_FILES["train"]
    protocol.write_bytes(protocol.read_bytes() + b"S1 LA_T_\xff - - bonafide\r\n")
    loaded = get_dataset("asv19").load(root, ["train"])
    assert len(loaded.table) == 1
    assert loaded.problems[0].reason == f"{protocol}:2: line is not valid UTF-8"


def make_asv5(root: Path, lines: dict[str, list[str]]) -> Path:
    root.mkdir(parents=True)
    for split, split_lines in lines.items():
        (root / ASV5_FILES[split]).write_text("".join(f"{x}\n" for x in split_lines))
        for line in split_lines:
            fields = line.split()
            if len(fields) == 10:
                write_flac(root / ASV5_DIRS[split] / f"{fields[1]}.flac")
    return root


def test_asv5_reads_codec_and_extra_columns(tmp_path: Path) -> None:
    lines = {
        "train": [
            "T_5720 T_0000000000 F - - - - bonafide bonafide -",
            "T_2347 T_0000000001 M - - - AC2 A04 spoof -",
        ],
        "dev": ["D_9112\tD_0000000002\tM\t-\t-\t-\tAC1\tA05\tspoof\t-"],
        "eval": [
            "E_3882 E_0000000000 F C03 1 E_0000000060 AC2 A09 spoof -",
            "E_9563 E_0000000001 F C01 2 E_0000000263 - bonafide bonafide -",
            "E_9563 E_0000000002 F C01 2 - bonafide bonafide -",
            "E_9563 E_0000000003 F - - - - A07 bonafide -",
        ],
    }
    root = make_asv5(tmp_path / "asv5", lines)
    loaded = get_dataset("asv5").load(root)
    table = loaded.table
    assert tuple(table.columns) == (*COLUMNS, "gender", "codec_q", "attack_tag")
    assert "ASVspoof 5" in loaded.description
    assert list(table["utt_id"]) == [
        "T_0000000000",
        "T_0000000001",
        "D_0000000002",
        "E_0000000000",
        "E_0000000001",
    ]
    assert list(table["system"]) == ["bonafide", "A04", "A05", "A09", "bonafide"]
    assert list(table["codec"]) == ["-", "-", "-", "C03", "C01"]
    assert list(table["codec_q"]) == ["-", "-", "-", "1", "2"]
    assert list(table["gender"]) == ["F", "M", "M", "F", "F"]
    assert list(table["attack_tag"]) == ["-", "AC2", "AC1", "AC2", "-"]
    assert list(table["split"]) == ["train", "train", "dev", "eval", "eval"]
    assert Path(table["path"].iloc[2]) == (root / "flac_D/D_0000000002.flac").resolve()
    eval_protocol = root / ASV5_FILES["eval"]
    reasons = [p.reason for p in loaded.problems]
    assert reasons[0].startswith(f"{eval_protocol}:3: expected 10 columns")
    assert reasons[1].startswith(f"{eval_protocol}:4: key 'bonafide' contradicts system 'A07'")


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert safe_join(tmp_path, "a/b.flac") == (tmp_path / "a/b.flac").resolve()
    assert safe_join(tmp_path, "a/../c.flac") == (tmp_path / "c.flac").resolve()
    for bad in ("../x.flac", "a/../../x.flac", "/etc/passwd"):
        with pytest.raises(PathEscapeError):
            safe_join(tmp_path, bad)


def test_validate_table_rejects_broken_tables() -> None:
    row = dict(
        utt_id="u1", speaker="-", system="A01", codec="-", label="spoof", split="train",
        path="/data/u1.flac", duration=float("nan"),
    )
    validate_table(pd.DataFrame([row]))
    with pytest.raises(DatasetError, match="not unique"):
        validate_table(pd.DataFrame([row, row]))
    with pytest.raises(DatasetError, match="system must be 'bonafide'"):
        validate_table(pd.DataFrame([{**row, "label": "bonafide"}]))
    with pytest.raises(DatasetError, match="absolute"):
        validate_table(pd.DataFrame([{**row, "path": "u1.flac"}]))
    with pytest.raises(DatasetError, match="do not start with"):
        validate_table(pd.DataFrame([row]).drop(columns="codec"))

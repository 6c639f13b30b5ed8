"""The ``manifest`` dataset: CSV and Parquet manifests of a user's own corpus."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from extract.datasets import COLUMNS, DatasetError, get_dataset


def write_csv(folder: Path, text: str, name: str = "manifest.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_csv_manifest_normalises_labels_and_fills_defaults(tmp_path: Path) -> None:
    manifest = write_csv(
        tmp_path / "corpus",
        "path,label,speaker,system\n"
        "audio/a.wav,bonafide,spk1,\n"
        "audio/b.wav,Bona-Fide,,\n"
        "other/a.flac,genuine,,-\n"
        "c.wav,1,,\n"
        "d.wav,spoof,spk2,tts1\n"
        "e.wav,FAKE,,\n"
        "f.wav,0,,\n",
    )
    loaded = get_dataset("manifest").load(manifest)
    table = loaded.table
    assert tuple(table.columns) == COLUMNS and loaded.problems == []
    assert str(manifest) in loaded.description
    assert list(table["label"]) == ["bonafide"] * 4 + ["spoof"] * 3
    assert list(table["system"]) == ["bonafide"] * 4 + ["tts1", "-", "-"]
    assert list(table["utt_id"]) == ["a", "b", "a_2", "c", "d", "e", "f"]
    assert list(table["speaker"]) == ["spk1", "-", "-", "-", "spk2", "-", "-"]
    assert set(table["split"]) == {"all"} and set(table["codec"]) == {"-"}
    assert Path(table["path"].iloc[0]) == (manifest.parent / "audio/a.wav").resolve()


def test_folder_root_finds_the_manifest(tmp_path: Path) -> None:
    write_csv(tmp_path / "corpus", "path,label\nx.wav,spoof\n")
    assert list(get_dataset("manifest").load(tmp_path / "corpus").table["utt_id"]) == ["x"]
    write_csv(tmp_path / "corpus", "", name="manifest.parquet")
    with pytest.raises(DatasetError, match="both"):
        get_dataset("manifest").load(tmp_path / "corpus")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither"):
        get_dataset("manifest").load(tmp_path / "empty")


def test_bad_rows_become_problems_with_line_numbers(tmp_path: Path) -> None:
    outside = tmp_path / "outside.wav"
    manifest = write_csv(
        tmp_path / "corpus",
        "utt_id,path,label\n"
        "u1,ok.wav,spoof\n"
        "u2,../escape.wav,spoof\n"
        "u3,ok3.wav,maybe\n"
        "u1,dup.wav,bonafide\n"
        "u5,,spoof\n"
        f"u6,{outside},bonafide\n"
        "has space,x.wav,spoof\n",
    )
    loaded = get_dataset("manifest").load(manifest)
    assert list(loaded.table["utt_id"]) == ["u1", "u6"]
    assert loaded.table["path"].iloc[1] == str(outside)  # absolute paths are the user's choice
    reasons = {p.utt_id: p.reason for p in loaded.problems}
    assert reasons["u2"].startswith(f"{manifest}:3: ") and "outside" in reasons["u2"]
    assert reasons["u3"].startswith(f"{manifest}:4: unknown label 'maybe'")
    assert "genuine" in reasons["u3"]  # the accepted values are listed
    assert reasons["u1"] == f"{manifest}:5: duplicate utterance id 'u1' (first at {manifest}:2)"
    assert reasons["u5"] == f"{manifest}:6: empty path"
    assert "whitespace" in reasons["has space"]


def test_split_selection(tmp_path: Path) -> None:
    text = "path,label,split\na.wav,spoof,train\nb.wav,bonafide,test\nc.wav,spoof,\n"
    manifest = write_csv(tmp_path / "c", text)
    dataset = get_dataset("manifest")
    assert list(dataset.load(manifest, ["test"]).table["utt_id"]) == ["b"]
    assert list(dataset.load(manifest, ["all", "train"]).table["split"]) == ["train", "all"]
    with pytest.raises(DatasetError, match="it has: train, test, all"):
        dataset.load(manifest, ["dev"])


def test_missing_required_column(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "c", "file,label\na.wav,spoof\n")
    with pytest.raises(DatasetError, match="lacks column.*path"):
        get_dataset("manifest").load(manifest)


def test_parquet_manifest_with_numeric_labels(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "path": ["s1/a.flac", "s2/a.flac", "b.flac", "../c.flac"],
            "label": [1, 0, 2, 0],
            "codec": ["C01", None, "-", "-"],
            "speaker": ["s1", "s2", None, None],
        },
        index=[10, 11, 12, 13],  # a stored index must not change the row numbers
    )
    manifest = tmp_path / "m" / "list.parquet"
    manifest.parent.mkdir()
    frame.to_parquet(manifest)
    loaded = get_dataset("manifest").load(manifest)
    table = loaded.table
    assert list(table["utt_id"]) == ["a", "a_2"]
    assert list(table["label"]) == ["bonafide", "spoof"]
    assert list(table["codec"]) == ["C01", "-"]
    assert list(table["speaker"]) == ["s1", "s2"]
    reasons = [p.reason for p in loaded.problems]
    assert reasons[0].startswith(f"{manifest}: row 3: unknown label '2'")
    assert reasons[1].startswith(f"{manifest}: row 4: ") and "outside" in reasons[1]

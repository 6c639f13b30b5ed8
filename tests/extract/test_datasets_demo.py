"""The generated ``demo`` corpus: deterministic, idempotent, readable as ASVspoof 2019 LA."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import soundfile as sf

from extract.datasets import DatasetError, generate_demo_corpus, get_dataset
from extract.datasets.demo import MARKER

SMALL = {"train": 5, "dev": 4, "eval": 5}


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", SMALL, seed=3)


def test_same_seed_gives_same_bytes(small_corpus: Path, tmp_path: Path) -> None:
    again = generate_demo_corpus(tmp_path / "again", SMALL, seed=3)
    assert digests(again) == digests(small_corpus)
    other = digests(generate_demo_corpus(tmp_path / "other", SMALL, seed=4))
    assert other.keys() == digests(small_corpus).keys()
    assert other != digests(small_corpus)


def test_generation_is_idempotent(small_corpus: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in small_corpus.rglob("*")}
    assert generate_demo_corpus(small_corpus, SMALL, seed=3) == small_corpus
    assert {p: p.stat().st_mtime_ns for p in small_corpus.rglob("*")} == before


def test_refuses_folders_it_does_not_own(small_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="other settings"):
        generate_demo_corpus(small_corpus, SMALL, seed=4)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an empty folder"):
        generate_demo_corpus(tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".busy.*")), "staging folder left behind"


def test_layout_reads_as_asv19(small_corpus: Path) -> None:
    readme = (small_corpus / "README.txt").read_text()
    assert "not speech" in readme and "not ASVspoof" in readme
    assert (small_corpus / MARKER).is_file()
    loaded = get_dataset("asv19").load(small_corpus)
    table = loaded.table
    assert loaded.problems == []
    assert table.groupby("split").size().to_dict() == SMALL
    for split, rows in table.groupby("split"):
        assert set(rows["label"]) == {"bonafide", "spoof"}, split
    assert set(table.loc[table["split"] != "eval", "system"]) <= {"bonafide", "A01", "A02", "A03"}
    assert set(table.loc[table["split"] == "eval", "system"]) <= {"bonafide", "A04", "A05", "A06"}
    assert set(table.loc[table["label"] == "bonafide", "system"]) == {"bonafide"}
    for path in table["path"]:
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (16000, 1)
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert 1.5 <= info.duration <= 4.0


def test_demo_dataset_generates_default_corpus(tmp_path: Path) -> None:
    start = time.process_time()
    loaded = get_dataset("demo").load(tmp_path / "demo", ["train", "eval"])
    assert time.process_time() - start < 10.0
    counts = loaded.table.groupby(["split", "label"]).size().to_dict()
    assert counts == {
        ("eval", "bonafide"): 12,
        ("eval", "spoof"): 28,
        ("train", "bonafide"): 12,
        ("train", "spoof"): 28,
    }
    assert "demo" in loaded.description and loaded.problems == []
    assert len(get_dataset("demo").load(tmp_path / "demo", ["dev"]).table) == 24

"""The offline corpora under shared/data, when this checkout has them (skipped otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extract.datasets import get_dataset

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared/data"


@pytest.mark.parametrize(
    ("name", "folder", "counts"),
    [
        ("asv19", "offla19", {"train": 1199, "dev": 598, "eval": 996}),
        ("asv5", "offla5", {"train": 400, "dev": 200, "eval": 400}),
    ],
)
def test_offline_corpus_counts(name: str, folder: str, counts: dict[str, int]) -> None:
    root = SHARED_DATA / folder
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    loaded = get_dataset(name).load(root)
    assert loaded.problems == []
    assert loaded.table.groupby("split").size().to_dict() == counts
    assert loaded.table["path"].map(lambda p: Path(p).is_file()).all()

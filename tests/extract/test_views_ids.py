"""A view's audio source names each row by the utterance table of the store as it is: ids read once
per process are keyed by the table's content, so a store recreated at the same URL is read again."""

from __future__ import annotations

import shutil

import pandas as pd

from extract.views import ViewAudio
from tests.synthetic import synthetic_store

RECIPE = {"name": "v", "chain": [], "seed": 1, "splits": ["train"], "streams": ["codes"]}


def table_ids(path: str) -> list[str]:
    return list(pd.read_parquet(f"{path}/utterances.parquet")["utt_id"].astype(str))


def test_rows_are_named_by_the_store_as_it_is_now(tmp_path):
    path = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4)
    first = ViewAudio.of(path, RECIPE)
    assert [first.utt_id(r) for r in range(len(table_ids(path)))] == table_ids(path)
    shutil.rmtree(path)
    synthetic_store(path, n_per_split=6, splits=("dev", "train"))  # other rows under the same URL
    again = ViewAudio.of(path, RECIPE)
    assert [again.utt_id(r) for r in range(len(table_ids(path)))] == table_ids(path)
    assert again.utt_id(0) != first.utt_id(0)

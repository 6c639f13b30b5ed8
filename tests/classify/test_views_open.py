"""A sweep worker's opened stores (`classify.sweep.open_store`, one per URL and process) see a view
that another process added after the first open, and a store recreated at the same URL."""

from __future__ import annotations

import shutil

from classify.sweep import open_store
from classify.views import view_names
from store import format as sf
from tests.synthetic import add_view, synthetic_store


def test_two_opens_around_an_added_view_see_it(tmp_path):
    path = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4)
    add_view(path, "one", ("train",), marker=1)
    first = open_store(path)
    assert list(first.views) == ["one"] and open_store(path) is first  # unchanged store: opened once
    add_view(path, "two", ("train",), marker=2)  # as another process would, after the cache filled
    again = open_store(path)
    assert list(again.views) == ["one", "two"] and view_names(again, "all", "train") == ["one", "two"]
    sf.StoreFiles(path).update_group_attrs({"state": sf.STATE_EXTRACTING}, "views/two")  # a view not finished
    assert open_store(path) is not again


def test_a_store_recreated_at_the_same_url_is_opened_again(tmp_path):
    path = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4)
    ids = list(open_store(path).utterances["utt_id"])
    shutil.rmtree(path)
    synthetic_store(path, n_per_split=6)
    assert list(open_store(path).utterances["utt_id"]) != ids
    assert len(open_store(path).utterances) == len(ids) + 3 * 2  # two more per split

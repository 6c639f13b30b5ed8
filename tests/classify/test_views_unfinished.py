"""``views = "all"`` means every finished view that applies to the split: a view still being
extracted is left out, on one line; naming it explicitly stays an error."""

from __future__ import annotations

import json

import pytest

from classify.data import DataError
from classify.train import HISTORY, train
from classify.views import view_names
from store import format as sf
from store.reader import FeatureStore
from tests.synthetic import add_view, synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    """Train views ``one`` (finished) and ``late`` (its codec streams still being extracted)."""
    path = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=8)
    add_view(path, "one", ("train",), marker=1)
    add_view(path, "late", ("train",), marker=2)
    sf.StoreFiles(path).update_group_attrs({"state": sf.STATE_EXTRACTING}, "views/late")
    return FeatureStore(path)


def test_all_trains_on_the_finished_views_and_says_which_it_left_out(store, tmp_path):
    logged: list[str] = []
    assert view_names(store, "all", "train", logged.append) == ["one"]
    assert logged == [f"{store.url}: views all leaves out the unfinished view(s) late (codec streams still being "
                      "extracted); run the same `pipeline extract --views ...` again to finish them"]
    logged.clear()
    result = train(tiny_config(epochs=1, views="all"), store, tmp_path / "run", log=logged.append)
    assert result.epochs_run == 1
    assert sum("leaves out the unfinished view(s) late" in line for line in logged) == 1
    draws = json.loads((tmp_path / "run" / HISTORY).read_text().splitlines()[0])["view_draws"]
    assert set(draws) == {"clean", "one"}


def test_naming_an_unfinished_view_stays_an_error(store, tmp_path):
    with pytest.raises(DataError, match=r"s\.zarr: view 'late' is still being extracted"):
        train(tiny_config(epochs=1, views="one,late"), store, tmp_path / "run", log=lambda _: None)


def test_all_with_only_unfinished_views_is_refused_naming_them(tmp_path):
    path = synthetic_store(str(tmp_path / "u.zarr"), n_per_split=4)
    add_view(path, "late", ("train",))
    sf.StoreFiles(path).update_group_attrs({"state": sf.STATE_EXTRACTING}, "views/late")
    with pytest.raises(DataError, match=r"no finished augmented view applies to split 'train'.*unfinished: late"):
        view_names(FeatureStore(path), "all", "train")

"""Augmented views in the store (`store.views`): read through the reader, listed by inspect, exported
under the same ids, checked by verify; stores without views open as before."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.commands.storetools import export_command, inspect_command
from store import format as sf
from store.export import ExportError, export_hdf5
from store.inspect import format_report, inspect_store
from store.reader import FeatureStore, StoreReadError
from store.verify import verify_store
from tests.synthetic import add_view, synthetic_store, verifiable_store, view_recipe


@pytest.fixture(scope="module")
def viewed(tmp_path_factory) -> tuple[str, dict, dict]:
    path = synthetic_store(str(tmp_path_factory.mktemp("v") / "s.zarr"), n_per_split=6, failed_per_split=1, seed=2)
    shifted = add_view(path, "shifted", ("dev", "eval"))
    marked = add_view(path, "marked", ("train",), marker=5, streams=("codes",))
    return path, shifted, marked


def test_a_store_without_views_opens_as_before(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4))
    assert store.views == {}
    assert store.view_name == "" and store.recipe is None
    assert inspect_store(store.url)["views"] == []
    with pytest.raises(StoreReadError, match="no view 'x'; this store has: none"):
        store.view("x")


def test_a_view_reads_its_own_frames_under_the_store_rows(viewed):
    path, shifted, _ = viewed
    store = FeatureStore(path)
    view = store.view("shifted")
    table = store.utterances
    assert set(view.streams) == {"codes", "latent"}
    assert view.recipe == view_recipe("shifted", ("dev", "eval"))
    for row in range(len(table)):
        expected = shifted.get(row)
        got = view.utterance_codes(row)
        if expected is None:
            assert len(got) == 0 and view.utterances["status"].iloc[row] == "failed"
        else:  # the clean codes + 1, where the clean store has the clean ones
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(got, (store.utterance_codes(row).astype(int) + 1) % store.codec.codebook_size)
            np.testing.assert_array_equal(view.utterance_latent(row), store.utterance_latent(row) + 1)
    assert view.split("dev")["utt_id"].tolist() == store.split("dev")["utt_id"].tolist()
    assert view.split("train").empty  # outside its splits


def test_inspect_lists_every_view_with_its_recipe(viewed):
    path, shifted, marked = viewed
    info = inspect_store(path)
    listed = {v["name"]: v for v in info["views"]}
    assert set(listed) == {"shifted", "marked"}
    for name, splits, rows in (("shifted", ["dev", "eval"], shifted), ("marked", ["train"], marked)):
        recipe = view_recipe(name, tuple(splits))
        entry = listed[name]
        assert {k: entry[k] for k in ("splits", "seed", "chain", "versions")} == \
               {k: recipe[k] for k in ("splits", "seed", "chain", "versions")}
        assert entry["ok"] == len(rows) and entry["failed"] == len(splits)  # one failed utterance in each split
        assert entry["state"] == sf.STATE_COMPLETE
    assert "view        marked: gain (seed 1, splits train; streams codes)" in format_report(info)
    out = CliRunner().invoke(inspect_command, ["--json", path])
    assert out.exit_code == 0, out.output
    assert [v["name"] for v in json.loads(out.output)["views"]] == [v["name"] for v in info["views"]]


def test_export_of_a_view_differs_from_the_clean_one_under_the_same_ids(viewed, tmp_path):
    path, shifted, _ = viewed
    clean = export_hdf5(path, tmp_path / "clean.h5", split="eval")
    view = export_hdf5(path, tmp_path / "view.h5", split="eval", view="shifted")
    assert (clean.utterances, clean.frames) == (view.utterances, view.frames)
    store = FeatureStore(path)
    with h5py.File(tmp_path / "clean.h5") as c, h5py.File(tmp_path / "view.h5") as v:
        assert list(c["utterance_id"].asstr()) == list(v["utterance_id"].asstr())
        assert v.attrs["view"] == "shifted" and c.attrs["view"] == ""
        assert json.loads(v.attrs["view_recipe"])["splits"] == ["dev", "eval"]
        rows = v["utterances/store_row"][...]
        expected = np.concatenate([store.embeddings(shifted[r]) for r in rows])
        np.testing.assert_array_equal(v["embeddings"][...], expected)
        assert not np.array_equal(v["embeddings"][...], c["embeddings"][...])
    with pytest.raises(ExportError, match="view 'shifted' applies to split.s. dev, eval, not 'train'"):
        export_hdf5(path, tmp_path / "x.h5", split="train", view="shifted")
    out = CliRunner().invoke(export_command, [path, "--format", "hdf5", "--out", str(tmp_path / "c.h5"), "--view", "marked"])
    assert out.exit_code == 0 and "view marked" in out.output, out.output


def test_verify_checks_a_view_and_maps_its_damage(tmp_path):
    path = verifiable_store(str(tmp_path / "s.zarr"), n_per_split=6)
    add_view(path, "v", ("eval",), unit_size=4)
    assert verify_store(path).ok
    files = sf.StoreFiles(path)
    victim = files.path("views/v/codes/c/0/0")
    with open(victim, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        f.seek(0)
        f.write(bytes(data))
    report = verify_store(path)
    assert not report.ok
    assert any("views/v/codes/c/0/0" in p for p in report.problems), report.problems
    (affected,) = report.affected
    assert affected.array == "views/v/codes" and affected.stream == "codes"
    table = FeatureStore(path).utterances
    assert set(table["split"].iloc[affected.rows]) == {"eval"}  # only the view's utterances hold frames there


def test_a_view_being_extracted_is_reported_and_not_read(tmp_path):
    path = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=4)
    add_view(path, "v", ("dev",))
    sf.StoreFiles(path).update_group_attrs({"state": sf.STATE_EXTRACTING}, "views/v")
    store = FeatureStore(path)
    with pytest.raises(StoreReadError, match="view 'v' is still being extracted"):
        store.view("v")
    assert any("view v (codec streams) is still being extracted" in p for p in verify_store(path).problems)
    assert inspect_store(path)["views"][0]["state"] == sf.STATE_EXTRACTING

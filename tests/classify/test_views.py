"""Augmented views in training and scoring (`classify.views`): the per-utterance draw follows the
setting, a batch row holds the frames of the copy drawn for it, training and robustness evaluation
run on a store's views."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from classify.data import DataError
from classify.evaluate import evaluate
from classify.rebuild import for_store
from classify.sources import make_source
from classify.train import HISTORY, train
from classify.views import CLEAN, ViewMix, draw_copies, evaluate_views, train_source, view_names
from pipeline.commands.evaluate import command as evaluate_command
from store.reader import FeatureStore
from tests.synthetic import add_view, synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    """Train views ``one`` and ``two`` whose codes are all 1 and all 2 (recognisable in a batch), an
    eval view ``shifted`` (codes + 1) and a dev/eval view ``noisy``."""
    path = synthetic_store(str(tmp_path_factory.mktemp("views") / "s.zarr"), n_per_split=16, failed_per_split=1)
    add_view(path, "one", ("train",), marker=1)
    add_view(path, "two", ("train",), marker=2)
    add_view(path, "shifted", ("eval",))
    add_view(path, "noisy", ("dev", "eval"), seed=7)
    return FeatureStore(path)


@pytest.mark.parametrize("share", [0.0, 0.3, 0.8, 1.0])
def test_the_draw_frequency_follows_the_clean_share(share):
    n, k = 30_000, 3
    available = np.ones((k, n), dtype=bool)
    available[:, :1000] = False  # utterances no view holds: always clean
    available[1, 1000:2000] = False  # view 1 missing here: views 0 and 2 only
    copy = draw_copies(available, share, torch.Generator().manual_seed(1))
    assert (copy[:1000] == 0).all()
    assert not (copy[1000:2000] == 2).any()
    rest = copy[2000:]
    sd = np.sqrt(share * (1 - share) / rest.size)  # binomial
    assert abs(np.mean(rest == 0) - share) <= 5 * sd + 1e-12
    for view in (1, 2, 3):  # each view equally likely among the others
        expected = (1 - share) / k
        assert abs(np.mean(rest == view) - expected) <= 5 * np.sqrt(expected * (1 - expected) / rest.size) + 1e-12
    assert copy.tolist() == draw_copies(available, share, torch.Generator().manual_seed(1)).tolist()  # seeded


def test_a_batch_row_holds_the_frames_of_the_copy_drawn_for_it(store):
    config = dataclasses.asdict(tiny_config(views="one,two", view_clean_share=0.25))
    model = for_store(config, store)
    clean = make_source(store, model, config)
    mix = train_source(store, model, config, clean, "train", quiet)
    assert isinstance(mix, ViewMix) and mix.names == [CLEAN, "one", "two"]
    split = clean.split(store, "train")
    crop = 200  # longer than every utterance: with pad "repeat" a crop is the utterance tiled from its start
    tiles = {}
    for row in split.rows:
        codes = store.utterance_codes(int(row)).astype(np.int64)
        tiles[int(row)] = codes[np.arange(crop) % len(codes)]
    seen = {CLEAN: 0, "one": 0, "two": 0}
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        for batch, targets in mix.train_batches(split, 8, crop, "repeat", "none", generator):
            assert batch.codes.shape[1:] == (crop, store.codec.n_q) and (batch.lengths == crop).all()
            for codes, target in zip(batch.codes.numpy(), targets):
                if (codes == 1).all():
                    seen["one"] += 1
                elif (codes == 2).all():
                    seen["two"] += 1
                else:  # exactly the clean crop of an utterance of the right class
                    matches = [r for r, tile in tiles.items() if np.array_equal(codes, tile)]
                    assert len(matches) == 1
                    assert target == (store.utterances["label"].iloc[matches[0]] == "bonafide")
                    seen[CLEAN] += 1
        assert sum(mix.counts.values()) == len(split)
    total = sum(seen.values())
    assert total == 20 * len(split)
    assert abs(seen[CLEAN] / total - 0.25) < 0.1 and abs(seen["one"] - seen["two"]) / total < 0.1


def test_view_names_refuse_what_cannot_be_used(store):
    assert view_names(store, "", "train") == []
    assert view_names(store, "all", "train") == ["one", "two"]
    assert view_names(store, "all", "eval") == ["noisy", "shifted"]
    with pytest.raises(DataError, match="no view 'nope'; this store has: "):
        view_names(store, "one,nope", "train")
    with pytest.raises(DataError, match="view 'shifted' applies to split.s. eval, not 'train'"):
        view_names(store, "shifted", "train")
    bare = FeatureStore(synthetic_store(str(store.files.path("") + "-bare"), n_per_split=4))
    with pytest.raises(DataError, match="no augmented view applies to split 'train'; views: none"):
        view_names(bare, "all", "train")


def test_training_draws_views_and_stays_reproducible(store, tmp_path):
    config = tiny_config(epochs=2, views="all", view_clean_share=0.5)
    first = train(config, store, tmp_path / "a", log=quiet)
    again = train(config, store, tmp_path / "b", log=quiet)
    assert first.best_dev_eer == again.best_dev_eer
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (tmp_path / "a" / HISTORY).read_text().splitlines()]
    for row in history:
        assert set(row["view_draws"]) == {CLEAN, "one", "two"} and sum(row["view_draws"].values()) == 16
    plain = train(tiny_config(epochs=2), store, tmp_path / "c", log=quiet)
    assert "view_draws" not in json.loads((tmp_path / "c" / HISTORY).read_text().splitlines()[0])
    assert plain.epochs_run == 2


def test_evaluate_scores_a_view_and_tables_every_view_beside_clean(store, tmp_path):
    train(tiny_config(epochs=2), store, tmp_path / "run", log=quiet)
    best = tmp_path / "run" / "best.pt"
    clean = evaluate(best, store, "eval", tmp_path / "clean", log=quiet)
    shifted = evaluate(best, store, "eval", tmp_path / "shifted", log=quiet, view="shifted")
    metrics = json.loads((tmp_path / "shifted" / "metrics.json").read_text())
    assert metrics["view"] == "shifted" and metrics["view_recipe"]["splits"] == ["eval"]
    assert clean["view"] == CLEAN and shifted["n_scored"] == clean["n_scored"] == 16
    scores = {d: (tmp_path / d / "scores.txt").read_text().split() for d in ("clean", "shifted")}
    assert scores["clean"][::2] == scores["shifted"][::2]  # the same utterance ids
    assert scores["clean"][1::2] != scores["shifted"][1::2]  # other frames, other scores
    assert shifted["calibration"] == {**clean["calibration"], "scores_file": shifted["calibration"]["scores_file"]}
    with pytest.raises(ValueError, match="one view at a time; 'all' names 2"):  # never silently the first one
        evaluate(best, store, "eval", tmp_path / "two", log=quiet, view="all")
    results = evaluate_views(best, store, "eval", tmp_path / "all", "all", log=quiet)
    table = json.loads((tmp_path / "all" / "views.json").read_text())
    assert [r["copy"] for r in table["rows"]] == [CLEAN, "noisy", "shifted"]
    for row in table["rows"]:
        assert row["eer"] == results[row["copy"]]["eer"]
        assert row["eer_change"] == pytest.approx(row["eer"] - clean["eer"])
    assert table["rows"][2]["eer"] == shifted["eer"]
    out = CliRunner().invoke(evaluate_command, ["--model", str(best), "--features", store.url, "--out",
                                                str(tmp_path / "cli"), "--view", "shifted"])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["view"] == "shifted"
    out = CliRunner().invoke(evaluate_command, ["--model", str(best), "--features", store.url, "--out",
                                                str(tmp_path / "x"), "--view", "one"])
    assert out.exit_code == 1 and "view 'one' applies to split(s) train, not 'eval'" in out.output

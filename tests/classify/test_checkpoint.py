"""Checkpoints: weights_only round trip, atomic writes, foreign files, codec compatibility, RNG."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from classify.checkpoint import (
    CheckpointError,
    check_compatible,
    codec_dict,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from classify.train import train
from store.reader import FeatureStore
from tests.synthetic import synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A store and a one-epoch run on it."""
    root = tmp_path_factory.mktemp("ckpt")
    store = FeatureStore(synthetic_store(str(root / "s.zarr"), n_per_split=8))
    train(tiny_config(epochs=1), store, root / "run", log=lambda _: None)
    return store, root / "run"


def test_checkpoints_load_with_weights_only_and_hold_the_run(run):
    store, run_dir = run
    for name in ("best.pt", "last.pt"):
        state = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert state["format"] == "rvq-antispoof-checkpoint" and state["epoch"] == 1
        assert state["config"] == dataclasses.asdict(tiny_config(epochs=1))
        assert state["codec"] == codec_dict(store.codec)
        assert state["store"] == {"url": store.url, "dataset": "asv19"}
        assert set(state["rng"]) == {"torch", "data", "cuda"} and state["rng"]["data"].dtype == torch.uint8
        assert state["optimizer"]["state"] and state["schedule"]["step"] == 1
        assert len(state["history"]) == 1 and state["early_stop"]["best_epoch"] == 1


def test_model_from_checkpoint_restores_the_parameters(run):
    store, run_dir = run
    state = load_checkpoint(run_dir)  # a directory means its best.pt
    model = model_from_checkpoint(state, store)
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def test_save_is_atomic_and_round_trips(tmp_path):
    path = save_checkpoint(tmp_path / "x.pt", {"model": {"w": torch.ones(2)}, "epoch": 3, "note": "é"})
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["note"] == "é" and torch.equal(state["model"]["w"], torch.ones(2))


def test_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "nothere.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a checkpoint of this tool"):
        load_checkpoint(tmp_path / "other.pt")


def test_store_of_another_codec_is_refused(run, tmp_path):
    _, run_dir = run
    state = load_checkpoint(run_dir / "best.pt")
    other = FeatureStore(synthetic_store(str(tmp_path / "other.zarr"), n_per_split=4, weights_seed=1))
    with pytest.raises(CheckpointError, match=r"best\.pt was trained on features of another codec.*weights_sha256"):
        check_compatible(state, other, run_dir / "best.pt")
    fewer_levels = FeatureStore(synthetic_store(str(tmp_path / "nq4.zarr"), n_per_split=4, n_q=4))
    with pytest.raises(CheckpointError, match=r"n_q: checkpoint 8, store 4.*bandwidth: checkpoint 6\.0, store 3\.0"):
        check_compatible(state, fewer_levels, "ckpt")


def test_rng_state_round_trip_reproduces_draws():
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(7)
    saved = rng_state(generator)
    first = (torch.rand(3), torch.rand(3, generator=generator))
    restore_rng(saved, generator)
    again = (torch.rand(3), torch.rand(3, generator=generator))
    assert all(torch.equal(a, b) for a, b in zip(first, again))

"""The `energy` control: the store's frame-energy stream alone (no codec), through the ordinary
training and evaluation paths, standardised with the training split's statistics."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from classify.data import DataError
from classify.evaluate import evaluate
from classify.train import train
from store.reader import FeatureStore
from tests.synthetic import synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATS = dict(variant="energy", head="stats", head_kwargs={}, epochs=15, lr=3e-2, crop_seconds=0.8)


def quiet(_: str) -> None:
    pass


def plant_energy(path: str, gap_db: float, seed: int) -> np.ndarray:
    """Overwrite the energy stream: bona fide frames N(-30, 4) dB, spoofed ones N(-30 - gap, 4), while the
    codes carry nothing (informative=0). Returns the stream as written (float64 [frames])."""
    store = FeatureStore(path)
    rng = np.random.default_rng(seed)
    table = store.utterances[store.utterances["status"] == "ok"]
    energy = np.zeros(int(store.offsets[-1]))
    for row in table.itertuples():
        shift = 0.0 if row.label == "bonafide" else gap_db
        energy[row.frame_offset : row.frame_offset + row.n_frames] = rng.normal(-30 - shift, 4, row.n_frames)
    energy = energy.astype(np.float16)
    zarr.open_group(path, mode="r+")["energy"][...] = energy[:, None]
    return energy.astype(np.float64)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("energy")
    a = synthetic_store(str(root / "traindev.zarr"), n_per_split=24, energy=True, informative=0,
                        splits=("train", "dev"))
    b = synthetic_store(str(root / "eval.zarr"), n_per_split=24, energy=True, informative=0, splits=("eval",), seed=1)
    return a, plant_energy(a, 6.0, 0), b, plant_energy(b, 6.0, 1)


def test_energy_control_learns_the_energy_cue_and_evaluates_in_another_store(stores, tmp_path):
    path_a, energy_a, path_b, _ = stores
    store = FeatureStore(path_a)
    result = train(tiny_config(**STATS), store, tmp_path / "run", log=quiet)
    assert result.stopped == "completed" and result.level_weights is None
    assert result.n_trainable == 3  # mean and std of one stream, then linear
    assert result.best_dev_eer <= 0.1

    # standardised with the train split's frames, computed here independently
    train_rows = store.utterances[(store.utterances["split"] == "train") & (store.utterances["status"] == "ok")]
    frames = np.concatenate([energy_a[r.frame_offset : r.frame_offset + r.n_frames] for r in train_rows.itertuples()])
    import torch

    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    assert float(state["weighting.latent_shift"][0]) == pytest.approx(frames.mean(), rel=1e-5)
    assert float(state["weighting.latent_scale"]) == pytest.approx(frames.std(), rel=1e-4)

    metrics = evaluate(tmp_path / "run", FeatureStore(path_b), "eval", tmp_path / "eval", calibrate=False, log=quiet)
    assert metrics["eer"] <= 0.1  # the other store's eval split, with the first store's statistics


def test_energy_control_without_the_stream_names_the_store_and_the_fix(tmp_path):
    path = synthetic_store(str(tmp_path / "noenergy.zarr"), n_per_split=6, energy=False)
    with pytest.raises(DataError, match=r"noenergy\.zarr: no stream 'energy'.*re-extract with --energy"):
        train(tiny_config(**STATS), FeatureStore(path), tmp_path / "run", log=quiet)

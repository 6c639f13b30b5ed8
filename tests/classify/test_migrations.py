"""Checkpoints and bundles of every past format and shape, made by the code of commit 7e33d6e
(tests/classify/fixtures, see its README), load through the migrations and score exactly as that
code scored them; trial ids stay; the one builder serves every caller."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from classify import migrations, rebuild
from classify.bundle import read_model
from classify.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from classify.config import TrainConfig
from classify.evaluate import evaluate, frame_window, score_split
from classify.migrations import FORMAT_VERSION, MIGRATIONS, FormatError, migrate
from classify.sources import make_source
from classify.sweep import trial_id
from classify.train import train
from store.reader import FeatureStore

SCORE_TOLERANCE = 1e-6
"""The old models' float32 scores, as 7e33d6e computed them, within this: the same arithmetic on another
CPU's kernels (a machine without AVX-512, say) may differ in the last bit (1.5e-8 seen on a score of 0.13)."""

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CHECKPOINTS = sorted(k for k in EXPECTED if k.endswith(".pt") and "bundle" not in k)
BUNDLES = sorted(k for k in EXPECTED if "bundle" in k)
EXPECTED_V2 = json.loads((FIXTURES / "expected-v2.json").read_text())  # 509724a's (format 2), see the README
V2_CHECKPOINT = "v2-codec-last.pt"


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def old_store(tmp_path_factory) -> FeatureStore:
    """The store 7e33d6e wrote (codes, latent, energy, an SSL stream), unpacked."""
    root = tmp_path_factory.mktemp("old")
    with tarfile.open(FIXTURES / "store-7e33d6e.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return FeatureStore(str(root / "store.zarr"), check=True)


def eval_scores(model, config: dict, store: FeatureStore) -> np.ndarray:
    source = make_source(store, model, {**config, "device": "cpu"})
    data = source.split(store, "eval")
    window, budget = frame_window(TrainConfig(**config), store.codec.frame_rate)
    return score_split(model, source, data, window, budget, torch.device("cpu"), None)


def test_fixtures_are_small_and_described():
    readme = (FIXTURES / "README.md").read_text()
    for path in FIXTURES.iterdir():
        if path.suffix in (".pt", ".gz"):
            assert path.stat().st_size <= 50_000, path.name
            assert path.name in readme, f"{path.name} is not described in the fixtures' README"
    assert set(CHECKPOINTS) | set(BUNDLES) | {V2_CHECKPOINT} == {p.name for p in FIXTURES.glob("*.pt")}


def test_every_migration_says_what_changed_and_the_chain_reaches_the_current_version():
    assert sorted(MIGRATIONS) == list(range(migrations.FIRST_VERSION, FORMAT_VERSION))
    assert all(step.about for step in MIGRATIONS.values())


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_an_old_checkpoint_migrates_and_scores_as_7e33d6e_scored_it(name, old_store, tmp_path):
    raw = torch.load(FIXTURES / name, map_location="cpu", weights_only=True)
    assert raw["format_version"] == 1
    state = load_checkpoint(FIXTURES / name)
    assert state["format_version"] == FORMAT_VERSION
    assert "ssl_kwargs" in state["config"] and "ssl" in state
    expected = EXPECTED[name]
    # evaluate's path: the store's codebooks and SSL stream
    model = model_from_checkpoint(state, old_store)
    np.testing.assert_allclose(eval_scores(model, state["config"], old_store), expected["scores"], rtol=0, atol=SCORE_TOLERANCE)
    metrics = evaluate(FIXTURES / name, old_store, "eval", tmp_path / "eval", log=quiet)
    for key in ("eer", "min_dcf", "act_dcf"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    # the Detector's path: codebooks given, the SSL record from the checkpoint
    detector = rebuild.build(state["config"], torch.from_numpy(old_store.codebooks), state["ssl"], state["model"])
    np.testing.assert_allclose(eval_scores(detector, state["config"], old_store), expected["detector_scores"],
                               rtol=0, atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("name", BUNDLES)
def test_an_old_bundle_migrates_and_scores_as_7e33d6e_scored_it(name, old_store):
    model_file = read_model(FIXTURES / name)
    state = model_file.state
    assert model_file.kind == "bundle" and state["format_version"] == FORMAT_VERSION
    assert model_file.codec_data == np.ascontiguousarray(old_store.codebooks).tobytes()  # what it embedded
    model = rebuild.build(state["config"], torch.from_numpy(old_store.codebooks), state.get("ssl"), state["model"])
    np.testing.assert_allclose(eval_scores(model, state["config"], old_store), EXPECTED[name]["detector_scores"],
                               rtol=0, atol=SCORE_TOLERANCE)


def test_an_ssl_model_from_before_the_attm_norm_is_rebuilt_without_it(old_store):
    old = load_checkpoint(FIXTURES / "v1-ssl-before-norm.pt")
    assert old["config"]["ssl_kwargs"] == {"proj_dim": 4, "norm": False}
    assert isinstance(model_from_checkpoint(old, old_store).attm.norm, torch.nn.Identity)
    new = load_checkpoint(FIXTURES / "v1-ssl.pt")
    assert new["config"]["ssl_kwargs"] == {"proj_dim": 4}  # the norm's parameters are there: the default holds
    assert isinstance(model_from_checkpoint(new, old_store).attm.norm, torch.nn.LayerNorm)


def test_a_checkpoint_from_before_the_ssl_variants_gets_their_entries():
    state = load_checkpoint(FIXTURES / "v1-codec-before-ssl.pt")
    raw = torch.load(FIXTURES / "v1-codec-before-ssl.pt", map_location="cpu", weights_only=True)
    assert "ssl_kwargs" not in raw["config"] and "ssl" not in raw
    assert state["config"]["ssl_kwargs"] == {} and state["ssl"] is None
    assert state["config"]["views"] == "" and state["config"]["view_clean_share"] == 0.5  # trained on clean audio
    assert state["config"]["dev_view"] == ""  # selected and calibrated on the clean dev split
    assert {k: v for k, v in state["config"].items()
            if k not in ("ssl_kwargs", "views", "view_clean_share", "dev_view")} == \
        raw["config"]


def test_an_old_last_checkpoint_resumes(old_store, tmp_path):
    """7e33d6e's last.pt of a one-epoch run (from before ssl_kwargs) resumes into a two-epoch run."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "best.pt"):  # its only epoch was its best
        shutil.copy(FIXTURES / "v1-codec-before-ssl.pt", run / name)
    config = TrainConfig(**{**load_checkpoint(run / "last.pt")["config"], "epochs": 2})
    logged: list[str] = []
    result = train(config, old_store, run, log=logged.append)
    assert result.epochs_run == 2 and any("resuming" in line and "after epoch 1" in line for line in logged)
    assert torch.load(run / "last.pt", weights_only=True)["format_version"] == FORMAT_VERSION


def test_trial_ids_of_7e33d6e_stay():
    recorded = EXPECTED["trial_ids"]
    for label, trial in recorded["trials"].items():
        assert trial_id(TrainConfig(**trial["config"]), recorded["identity"]) == trial["trial_id"], label


def test_newer_or_unknown_versions_are_refused_by_name(tmp_path):
    state = load_checkpoint(FIXTURES / "v1-codec.pt")
    path = save_checkpoint(tmp_path / "new.pt", state)
    future = torch.load(path, weights_only=True)
    future["format_version"] = FORMAT_VERSION + 1
    torch.save(future, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=rf"future\.pt: format version {FORMAT_VERSION + 1} is newer"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(FormatError, match="format version 0 cannot be read"):
        migrate({"format_version": 0, "config": {}}, "x.pt")
    assert migrate(state) == state  # the current version passes unchanged


def test_a_bare_results_config_is_migrated_without_guessing_the_norm():
    config = {"variant": "ssl+mean", "seed": 0}
    assert migrations.migrate_config(config) == {**config, "ssl_kwargs": {}, "views": "", "view_clean_share": 0.5,
                                                 "dev_view": ""}
    assert migrations.migrate_config(dataclasses.asdict(TrainConfig())) == dataclasses.asdict(TrainConfig())


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """The variants `classify.rebuild.build` was asked for, in order (every model is made there)."""
    calls: list[str] = []
    real = rebuild.build

    def counted(config, *args, **kwargs):
        calls.append(config["variant"])
        return real(config, *args, **kwargs)

    monkeypatch.setattr(rebuild, "build", counted)
    return calls


def tiny(**overrides) -> TrainConfig:
    values = dict(epochs=1, batch_size=4, lr=1e-2, warmup_steps=0, crop_seconds=0.4, patience=0, amp=False,
                  head_kwargs={"proj_dim": 4, "hidden_dim": 4}, device="cpu")
    return TrainConfig(**{**values, **overrides})


def test_one_builder_serves_training_resume_evaluate_and_sweeps(old_store, tmp_path, builds):
    from classify.sweep import OK, TrialTask, run_trial

    train(tiny(variant="scalar"), old_store, tmp_path / "run", log=quiet)
    assert builds == ["scalar"]  # the new model
    train(tiny(variant="scalar", epochs=2), old_store, tmp_path / "run", log=quiet)
    assert builds == ["scalar", "scalar"]  # the resumed run's model, which its last.pt is loaded into
    evaluate(tmp_path / "run", old_store, "eval", tmp_path / "eval", log=quiet)
    assert builds == ["scalar"] * 3
    task = TrialTask("t", dataclasses.asdict(tiny(variant="ssl+mean", ssl_kwargs={"proj_dim": 4})), {},
                     old_store.url, str(tmp_path / "trial"), "eval")
    row = run_trial(task)
    assert row["status"] == OK, row["error"]
    assert builds == ["scalar"] * 3 + ["ssl+mean"] * 3  # train, then evaluate on dev and on eval


def test_the_detector_builds_through_the_same_builder(scoring, builds):
    from classify.detector import Detector

    detector = Detector.load(scoring.run, device="cpu")
    assert builds == [detector.config.variant]
    state = load_checkpoint(scoring.run)
    assert all(torch.equal(v, state["model"][k]) for k, v in detector.model.state_dict().items())


def test_a_version_2_checkpoint_gets_dev_view_and_resumes(old_store, tmp_path):
    """509724a's last.pt (format 2, before dev_view) reads as selected on clean dev and resumes."""
    raw = torch.load(FIXTURES / V2_CHECKPOINT, weights_only=True)
    assert raw["format_version"] == EXPECTED_V2["format_version"] == 2 and "dev_view" not in raw["config"]
    state = load_checkpoint(FIXTURES / V2_CHECKPOINT)
    assert state["format_version"] == FORMAT_VERSION and state["config"] == {**EXPECTED_V2["config"], "dev_view": ""}
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "best.pt"):
        shutil.copy(FIXTURES / V2_CHECKPOINT, run / name)
    logged: list[str] = []
    result = train(TrainConfig(**{**state["config"], "epochs": 2}), old_store, run, log=logged.append)
    assert result.epochs_run == 2 and any("resuming" in line and "after epoch 1" in line for line in logged)


def test_trial_ids_of_509724a_stay():
    recorded = EXPECTED_V2["trial_ids"]
    for label, trial in recorded["trials"].items():
        assert trial_id(TrainConfig(**trial["config"]), recorded["identity"]) == trial["trial_id"], label

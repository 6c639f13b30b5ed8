"""Dev selection and calibration on an augmented view when asked (``dev_view``, `pipeline train
--dev-view`): the dev scores a run selects and calibrates on are those of the view's copy of dev,
the run records the view, and a view that cannot serve is refused in one line before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from classify.calibration import CALIBRATION_FILE
from classify.data import DataError
from classify.evaluate import evaluate, fit_calibration
from classify.metrics import compute_eer
from classify.train import CONFIG, HISTORY, train
from pipeline.commands.train import command as train_command
from store import format as sf
from store.reader import FeatureStore
from tests.synthetic import add_view, synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    """A dev/eval view ``noisy`` (codes + 1: other frames, other scores) and a train view ``one``."""
    path = synthetic_store(str(tmp_path_factory.mktemp("devview") / "s.zarr"), n_per_split=16, failed_per_split=1)
    add_view(path, "noisy", ("dev", "eval"), seed=7)
    add_view(path, "one", ("train",), marker=1)
    return FeatureStore(path)


def scores_of(path) -> dict[str, float]:
    words = path.read_text().split()
    return dict(zip(words[::2], map(float, words[1::2])))


def test_selection_and_calibration_read_the_view_when_asked(store, tmp_path):
    view_run = train(tiny_config(epochs=3, dev_view="noisy"), store, tmp_path / "view", log=quiet)
    clean_run = train(tiny_config(epochs=3), store, tmp_path / "clean", log=quiet)
    # the same training (dev reads no randomness): the last models are equal, only the dev copy differs
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("view", "clean"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = {d: [json.loads(line) for line in (tmp_path / d / HISTORY).read_text().splitlines()]
               for d in ("view", "clean")}
    table = store.utterances.set_index("utt_id")
    for run, dev_view in (("view", "noisy"), ("clean", None)):
        for name in ("last.pt", "best.pt"):  # each history row's dev EER is that of the dev copy asked for
            metrics = evaluate(tmp_path / run / name, store, "dev", tmp_path / f"{run}-{name}", log=quiet,
                               calibrate=False, view=dev_view)
            epoch = torch.load(tmp_path / run / name, weights_only=True)["epoch"]
            assert history[run][epoch - 1]["dev_eer"] == metrics["eer"]
        scores = scores_of(tmp_path / f"{run}-best.pt" / "scores.txt")
        bona = (table.loc[list(scores), "label"] == "bonafide").to_numpy()
        values = np.array(list(scores.values()))
        assert history[run][view_run.best_epoch - 1 if run == "view" else clean_run.best_epoch - 1]["dev_eer"] == \
            pytest.approx(compute_eer(values[bona], values[~bona])[0])
        # best.pt's calibration is the one fitted on those scores (an independent fit of the evaluated scores)
        fitted = fit_calibration(values, bona)
        saved = torch.load(tmp_path / run / "best.pt", weights_only=True)["calibration"]["calibration"]
        assert {k: saved[k] for k in fitted} == pytest.approx(fitted)
        assert saved.get("dev_view") == dev_view
    assert view_run.best_dev_eer == min(r["dev_eer"] for r in history["view"])
    # the view's dev frames differ, so do the dev scores: the two runs' calibrations differ
    view_cal, clean_cal = (json.loads((tmp_path / d / CALIBRATION_FILE).read_text())["calibration"]
                           for d in ("view", "clean"))
    assert (view_cal["coef"], view_cal["intercept"]) != (clean_cal["coef"], clean_cal["intercept"])
    # the run says dev was on the view; a clean run says nothing new
    assert all(r["dev_view"] == "noisy" for r in history["view"]) and "dev_view" not in history["clean"][0]
    assert json.loads((tmp_path / "view" / CONFIG).read_text())["config"]["dev_view"] == "noisy"
    assert json.loads((tmp_path / "view" / CALIBRATION_FILE).read_text())["calibration"]["dev_view"] == "noisy"
    checked = evaluate(tmp_path / "view" / "best.pt", store, "eval", tmp_path / "eval", log=quiet)
    assert "view 'noisy'" in checked["calibration"]["source"]


def test_a_dev_view_that_cannot_serve_is_refused_in_one_line(store, tmp_path):
    with pytest.raises(DataError, match=r"s\.zarr: no view 'nope'; this store has: noisy, one"):
        train(tiny_config(dev_view="nope"), store, tmp_path / "a", log=quiet)
    with pytest.raises(DataError, match=r"s\.zarr: view 'one' applies to split\(s\) train, not 'dev'"):
        train(tiny_config(dev_view="one"), store, tmp_path / "b", log=quiet)
    with pytest.raises(ValueError, match="dev_view must name one augmented view"):
        tiny_config(dev_view="all")
    assert not (tmp_path / "a" / HISTORY).exists() and not (tmp_path / "b" / HISTORY).exists()
    out = CliRunner().invoke(train_command, ["--features", store.url, "--out", str(tmp_path / "cli"),
                                             "--dev-view", "one", "--set", "device=cpu", "--epochs", "1"])
    assert out.exit_code == 1 and "view 'one' applies to split(s) train, not 'dev'" in out.output
    assert store.url in out.output and len(out.output.strip().splitlines()) == 1


def test_an_unfinished_dev_view_is_refused_by_name(tmp_path):
    path = synthetic_store(str(tmp_path / "u.zarr"), n_per_split=8)
    add_view(path, "late", ("dev",))
    sf.StoreFiles(path).update_group_attrs({"state": sf.STATE_EXTRACTING}, "views/late")
    with pytest.raises(DataError, match=r"u\.zarr: view 'late' is still being extracted"):
        train(tiny_config(dev_view="late"), FeatureStore(path), tmp_path / "run", log=quiet)
    assert not (tmp_path / "run" / HISTORY).exists()


def test_old_configs_read_as_clean_dev():
    from classify.migrations import FORMAT_VERSION, migrate, migrate_config

    assert migrate_config({"seed": 3}, version=2) == {"seed": 3, "dev_view": ""}
    state = migrate({"format_version": 2, "config": {"views": "all"}})
    assert state["format_version"] == FORMAT_VERSION and state["config"] == {"views": "all", "dev_view": ""}


def test_a_sweep_trial_scores_its_dev_role_on_the_dev_view(store, tmp_path):
    import dataclasses  # noqa: PLC0415

    from classify.sweep import TrialTask, run_trial  # noqa: PLC0415

    config = dataclasses.asdict(tiny_config(epochs=1, dev_view="noisy"))
    row = run_trial(TrialTask("t", config, {"dev_view": "noisy"}, store.url, str(tmp_path / "t"), None))
    assert row["status"] == "ok", row["error"]
    dev = json.loads((tmp_path / "t" / "dev" / "metrics.json").read_text())
    assert dev["view"] == "noisy" and row["dev_eer"] == dev["eer"]
    assert row["dev_view"] == "noisy"

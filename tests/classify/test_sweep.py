"""Sweeps: spec validation, grid expansion and stable ids, the trial runner, the results table,
resuming (finished trials skipped, a killed trial resumed from last.pt) and failing trials."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from classify import sweep as sweep_module
from classify import train as train_module
from classify.sweep import (
    CONFIG_FIELDS,
    METRICS,
    RESULTS,
    base_config,
    config_diff,
    expand,
    load_sweep,
    read_results,
    run_sweep,
    run_trial,
    store_identity,
    trial_id,
    write_results,
)
from common.config import ConfigError
from store.reader import FeatureStore
from tests.synthetic import synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_BASE = """
[base]
epochs = 1
batch_size = 8
lr = 1e-2
warmup_steps = 0
crop_seconds = 0.4
patience = 0
device = "cpu"
head_kwargs = {proj_dim = 8, hidden_dim = 8}
"""


def sweep_file(tmp_path: Path, grid: str, base: str = TINY_BASE, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(base + "\n[grid]\n" + grid)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    return FeatureStore(synthetic_store(str(tmp_path_factory.mktemp("sweep") / "s.zarr"), n_per_split=12,
                                   frames=(30, 60), latent=False))


def run(trials, store, out):
    return run_sweep(trials, store.url, out, "eval", lambda tasks: map(run_trial, tasks))


def count_train_calls(monkeypatch) -> list[str]:
    calls: list[str] = []

    def counting(config, store, out_dir, **kwargs):
        calls.append(Path(out_dir).name)
        return train_module.train(config, store, out_dir, **kwargs)

    monkeypatch.setattr(sweep_module, "train", counting)
    return calls


def test_grid_expands_in_order_with_stable_ids(tmp_path, store):
    spec = load_sweep(sweep_file(tmp_path, 'variant = ["mean", "single:1"]\nseed = [0, 1, 2]\n'))
    assert spec.n_trials == 6 and spec.shape() == "2 variant x 3 seed"
    identity = store_identity(store)
    trials = expand(spec, identity)
    assert [t.params for t in trials] == [{"variant": v, "seed": s} for v in ("mean", "single:1") for s in (0, 1, 2)]
    assert [t.trial_id for t in trials] == [t.trial_id for t in expand(spec, identity)]
    assert len({t.trial_id for t in trials}) == 6
    assert trials[3].trial_id.startswith("single1-s0-") and trials[3].config.epochs == 1
    # the id depends on the full config and the store's content, not on the sweep file or the store path
    moved = load_sweep(sweep_file(tmp_path, 'seed = [0, 1, 2]\nvariant = ["single:1", "mean"]\n', name="other.toml"))
    assert {t.trial_id for t in expand(moved, identity)} == {t.trial_id for t in trials}
    assert trial_id(trials[0].config, {**identity, "weights_sha256": "0" * 64}) != trials[0].trial_id
    assert config_diff(trials[4].config, base_config(spec)) == {"variant": "single:1", "seed": 1}
    # a field added later (ssl_kwargs, views, view_clean_share, dev_view) is hashed only away from its
    # old-behaviour value: older ids stay
    older = {k: v for k, v in dataclasses.asdict(trials[0].config).items()
             if k not in ("ssl_kwargs", "views", "view_clean_share", "dev_view")}
    digest = hashlib.sha256(json.dumps({"config": older, "store": identity}, sort_keys=True).encode()).hexdigest()[:8]
    assert trials[0].trial_id == f"mean-s0-{digest}"
    assert trial_id(dataclasses.replace(trials[0].config, ssl_kwargs={"proj_dim": 8}), identity) != trials[0].trial_id
    assert trial_id(dataclasses.replace(trials[0].config, views="all"), identity) != trials[0].trial_id
    # an SSL trial with AttM's output norm (the default since it exists) does not take the id such a
    # config had before, when AttM had no norm; with norm = false it is a new config too
    ssl = dataclasses.replace(trials[0].config, variant="ssl+mean", ssl_kwargs={"proj_dim": 8})
    before = {k: v for k, v in dataclasses.asdict(ssl).items() if not (k == "ssl_kwargs" and v == {})}
    old_id = hashlib.sha256(json.dumps({"config": before, "store": identity}, sort_keys=True).encode()).hexdigest()[:8]
    assert trial_id(ssl, identity) != f"sslmean-s0-{old_id}"
    off = dataclasses.replace(ssl, ssl_kwargs={"proj_dim": 8, "norm": False})
    assert trial_id(off, identity) not in (trial_id(ssl, identity), f"sslmean-s0-{old_id}")


def test_a_bundle_sets_several_settings_together(tmp_path, store):
    """head = [lstm (its size from [base]), {head = "stats", head_kwargs = {}}]: the stats head cannot take
    the LSTM's sizes, so both settings change together; head_kwargs tables stay plain values."""
    grid = 'variant = ["mean"]\nhead = ["lstm", {head = "stats", head_kwargs = {}}]\nseed = [0]\n'
    trials = expand(load_sweep(sweep_file(tmp_path, grid)), store_identity(store))
    assert [(t.config.head, t.config.head_kwargs) for t in trials] == [
        ("lstm", {"proj_dim": 8, "hidden_dim": 8}), ("stats", {})]
    assert trials[1].params == {"variant": "mean", "head": "stats", "head_kwargs": {}, "seed": 0}
    sizes = expand(load_sweep(sweep_file(tmp_path, 'head_kwargs = [{proj_dim = 4, hidden_dim = 4}, {}]\n',
                                         base=TINY_BASE.replace("head_kwargs = {proj_dim = 8, hidden_dim = 8}\n", ""))),
                   store_identity(store))
    assert [t.config.head_kwargs for t in sizes] == [{"proj_dim": 4, "hidden_dim": 4}, {}]
    for bad, message in [('head = [{head_kwargs = {}}]\n', "a table in the head list sets settings together and "
                          "must set head itself"),
                         ('head = [{head = "stats", lrr = 1}]\n', "unknown key(s) lrr"),
                         ('seed = [0]\nhead = [{head = "stats", seed = 1}]\n', "sets seed, which is also a grid axis")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_sweep(sweep_file(tmp_path, bad))


def test_set_overrides_base_and_pins_grid_axes(tmp_path, store):
    path = sweep_file(tmp_path, 'variant = ["mean", "scalar"]\nseed = [0, 1]\n')
    identity = store_identity(store)
    full = {t.trial_id for t in expand(load_sweep(path), identity)}
    pinned = expand(load_sweep(path, {"seed": 1}), identity)
    assert [t.params for t in pinned] == [{"variant": "mean", "seed": 1}, {"variant": "scalar", "seed": 1}]
    assert {t.trial_id for t in pinned} <= full
    widened = expand(load_sweep(path, {"seed": [1, 2]}), identity)
    assert [t.params["seed"] for t in widened] == [1, 2, 1, 2] and len({t.trial_id for t in widened} & full) == 2
    with pytest.raises(ConfigError, match=r"--set: seed lists a value twice"):
        load_sweep(path, {"seed": [1, 1]})
    changed = expand(load_sweep(path, {"lr": 0.5, "tau": 2}), identity)
    assert all(t.config.lr == 0.5 and t.config.tau == 2.0 for t in changed) and not {t.trial_id for t in changed} & full


@pytest.mark.parametrize("base,grid,overrides,message", [
    (TINY_BASE, 'variants = ["mean"]\n', {}, "s.toml [grid]: unknown key(s) variants; valid keys: amp, amp_cpu, amp_dtype"),
    (TINY_BASE + "learning_rate = 1\n", "", {}, "s.toml [base]: unknown key(s) learning_rate; valid keys:"),
    (TINY_BASE, 'variant = "mean"\n', {}, "s.toml [grid]: variant must be a non-empty list of values"),
    (TINY_BASE, "seed = []\n", {}, "s.toml [grid]: seed must be a non-empty list"),
    (TINY_BASE, "seed = [1, 1]\n", {}, "s.toml [grid]: seed lists a value twice"),
    (TINY_BASE, "epochs = [1, 2]\n", {}, "key(s) epochs are in both [base] and [grid]"),
    (TINY_BASE, 'variant = ["mean", "qaf-dynamic"]\n', {},
     "s.toml: trial variant='qaf-dynamic': unknown weighting variant 'qaf-dynamic'"),
    (TINY_BASE, "tau = [1, 1.0]\n", {}, "s.toml: trials {'tau': 1} and {'tau': 1.0} have the same configuration"),
    (TINY_BASE, 'tau = [0.5, "hot"]\n', {}, "s.toml: trial tau='hot': tau: expected float"),
    ("[sweep]\nname = 'x'\n" + TINY_BASE, "", {}, "s.toml: unexpected top-level key(s) sweep"),
    (TINY_BASE, "", {"learning_rate": 1}, "--set: unknown key(s) learning_rate; valid keys:"),
    (TINY_BASE, "", {"batch_size": 0}, "s.toml [base]: batch_size must be >= 1"),
])
def test_bad_sweep_files_fail_before_anything_runs(tmp_path, store, base, grid, overrides, message):
    path = sweep_file(tmp_path, grid, base=base)
    with pytest.raises(ConfigError) as err:
        expand(load_sweep(path, overrides), store_identity(store))
    assert message in str(err.value)
    assert str(path) in str(err.value) or message.startswith("--set")


def test_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        load_sweep(tmp_path / "nope.toml")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, store):
    """One 2 variants x 2 seeds sweep, run in-process with FeatureStore construction counted:
    (trials, out dir, outcome, store URLs opened)."""
    tmp = tmp_path_factory.mktemp("swept")
    trials = expand(load_sweep(sweep_file(tmp, 'variant = ["mean", "qaf-static"]\nseed = [0, 1]\n')),
                    store_identity(store))
    opened: list[str] = []

    def counting(url, **kwargs):
        opened.append(url)
        return FeatureStore(url, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_module, "FeatureStore", counting)
        sweep_module._opened.cache_clear()
        outcome = run(trials, store, tmp / "out")
        sweep_module._opened.cache_clear()
    return trials, tmp / "out", outcome, opened


def test_results_have_one_row_per_trial_with_every_column(swept, store):
    trials, out, outcome, _ = swept
    assert outcome.ran == 4 and outcome.skipped == 0 and outcome.failed == []
    table = read_results(out)
    assert list(table["trial_id"]) == [t.trial_id for t in trials] == list(outcome.results["trial_id"])
    assert set(table["status"]) == {"ok"} and set(table["error"]) == {""}
    expected = {"trial_id", "config_json", "params_json", "n_trainable", "wall_seconds", "level_weights",
                "codec_weights_label", "codec_weights_sha256", "codec_bandwidth", "codec_n_q", "codec_trained",
                *CONFIG_FIELDS, *(f"{role}_{m}" for role in ("dev", "eval") for m in METRICS)}
    assert expected <= set(table.columns)
    info = store.codec
    for row, trial in zip(table.to_dict("records"), trials):
        assert json.loads(row["config_json"])["seed"] == trial.config.seed == row["seed"]
        assert json.loads(row["params_json"]) == trial.params and row["variant"] == trial.config.variant
        assert json.loads(row["head_kwargs"]) == {"proj_dim": 8, "hidden_dim": 8}
        assert all(0 <= row[f"{role}_{m}"] <= 1 for role in ("dev", "eval") for m in ("eer", "min_dcf"))
        assert math.isfinite(row["eval_cllr"]) and row["dev_eer"] == pytest.approx(row["best_dev_eer"])
        assert (row["codec_weights_sha256"], row["codec_n_q"], row["codec_bandwidth"], row["codec_trained"]) == \
            (info.weights_sha256, info.n_q, info.bandwidth, False)
        assert row["codec_weights_label"] == info.weights_label and row["n_trainable"] > 0
        weights = json.loads(row["level_weights"])
        shape = [info.n_q] if row["variant"] == "mean" else [info.n_q, info.dim]
        assert [len(weights)] + ([len(weights[0])] if len(shape) == 2 else []) == shape
        run_dir = Path(row["trial_dir"])
        assert run_dir == out / "trials" / trial.trial_id
        for name in ("best.pt", "last.pt", "trial.log", "dev/metrics.json", "eval/metrics.json"):
            assert (run_dir / name).is_file(), name
        assert json.loads((run_dir / "eval" / "metrics.json").read_text())["eer"] == row["eval_eer"]
        # what made it: the sweep's own provenance (not the worker's), with the trial's device
        origin = json.loads(row["provenance_json"])
        assert row["command"] == origin["command"] and row["project_version"] == origin["version"]
        assert row["device"] == "cpu" and (row["git_commit"] or origin["git"] is None)
        checkpoint = torch.load(run_dir / "best.pt", weights_only=True)
        assert checkpoint["provenance"] == {**origin, "device": "cpu"}
    assert not (out / (RESULTS + ".tmp")).exists()


def test_a_process_opens_the_store_once_for_all_its_trials(swept, store):
    assert swept[3] == [store.url]


def test_rerun_skips_finished_trials_and_runs_unrecorded_ones(swept, store, tmp_path, monkeypatch):
    trials, out, _, _ = swept
    shutil.copytree(out, tmp_path / "out")
    calls = count_train_calls(monkeypatch)
    outcome = run(trials, store, tmp_path / "out")
    assert calls == [] and outcome.ran == 0 and outcome.skipped == 4 and len(outcome.results) == 4
    # a sweep killed before recording trial 2: only trial 2 runs again (its training resumes from last.pt)
    table = read_results(tmp_path / "out")
    write_results(tmp_path / "out", table[table["trial_id"] != trials[1].trial_id].to_dict("records"))
    outcome = run(trials, store, tmp_path / "out")
    assert calls == [trials[1].trial_id] and outcome.ran == 1 and outcome.skipped == 3
    assert sorted(read_results(tmp_path / "out")["trial_id"]) == sorted(t.trial_id for t in trials)


def test_a_killed_sweep_keeps_finished_trials_and_resumes_the_killed_one(tmp_path, store, monkeypatch):
    path = sweep_file(tmp_path, 'variant = ["scalar"]\nseed = [0, 1]\n', base=TINY_BASE.replace("epochs = 1", "epochs = 2"))
    trials = expand(load_sweep(path), store_identity(store))
    killed = tmp_path / "out" / "trials" / trials[1].trial_id
    end_epoch = train_module.TrainingRun.end_epoch

    def kill_trial_2_after_epoch_1(self, epoch, row):
        end_epoch(self, epoch, row)
        if self.out_dir == killed and epoch == 1:
            raise KeyboardInterrupt  # like a kill: not an Exception, so nothing records the trial

    monkeypatch.setattr(train_module.TrainingRun, "end_epoch", kill_trial_2_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run(trials, store, tmp_path / "out")
    assert list(read_results(tmp_path / "out")["trial_id"]) == [trials[0].trial_id]
    monkeypatch.setattr(train_module.TrainingRun, "end_epoch", end_epoch)
    calls = count_train_calls(monkeypatch)
    outcome = run(trials, store, tmp_path / "out")
    assert calls == [trials[1].trial_id] and outcome.failed == [] and list(outcome.results["epochs_run"]) == [2, 2]
    log = (killed / "trial.log").read_text()
    assert "resuming" in log and "after epoch 1" in log
    history = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]


def test_failing_trials_are_recorded_and_the_rest_finish(tmp_path, store, monkeypatch):
    # `latent` on a store without latent; `single:9` is an invalid combination for an 8-level store
    trials = expand(load_sweep(sweep_file(tmp_path, 'variant = ["latent", "single:9", "mean"]\nseed = [0]\n')),
                    store_identity(store))
    outcome = run(trials, store, tmp_path / "out")
    table = read_results(tmp_path / "out").set_index("trial_id")
    latent, single, mean = (t.trial_id for t in trials)
    assert outcome.failed == [latent, single] and table.loc[mean, "status"] == "ok"
    for tid, error in ((latent, "no stream 'latent'; this store has: codes"), (single, "k=9 is out of range")):
        assert table.loc[tid, "status"] == "failed" and error in table.loc[tid, "error"]
        assert math.isnan(table.loc[tid, "eval_eer"])
        assert "Traceback" in (tmp_path / "out" / "trials" / tid / "trial.log").read_text()
    assert table.loc[latent, "variant"] == "latent"
    # a re-run retries the failed trials only
    calls = count_train_calls(monkeypatch)
    assert run(trials, store, tmp_path / "out").failed == [latent, single] and calls == [latent, single]


def test_a_grid_over_augmented_views_is_a_sweep(tmp_path, store):
    spec = load_sweep(sweep_file(tmp_path, 'views = ["", "all", {views = "a,b", view_clean_share = 0.2}]\n'))
    trials = expand(spec, store_identity(store))
    assert [(t.config.views, t.config.view_clean_share) for t in trials] == [("", 0.5), ("all", 0.5), ("a,b", 0.2)]
    assert len({t.trial_id for t in trials}) == 3
    with pytest.raises((ConfigError, ValueError), match="view_clean_share"):
        expand(load_sweep(sweep_file(tmp_path, 'view_clean_share = [0.5, 1.5]\n', name="bad.toml")), store_identity(store))

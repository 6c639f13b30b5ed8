"""`pipeline sweep` through click's test runner: dry run, in-process and LocalCluster runs,
re-runs, failing trials and input errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from classify.model import build_model
from classify.sweep import expand, load_sweep, store_identity
from pipeline.cluster import threads_per_worker
from pipeline.commands.sweep import command
from store.reader import FeatureStore
from tests.synthetic import synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
SWEEP = """[base]
epochs = 1
batch_size = 8
lr = 1e-2
warmup_steps = 0
crop_seconds = 0.4
device = "cpu"
head_kwargs = {proj_dim = 8, hidden_dim = 8}

[grid]
variant = ["mean", "scalar"]
seed = [0, 1]
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return synthetic_store(str(tmp_path_factory.mktemp("cli") / "s.zarr"), n_per_split=12, frames=(30, 60), latent=False)


@pytest.fixture
def sweep_toml(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SWEEP)
    return path


def run(*args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_dry_run_lists_trials_with_their_diff_and_runs_nothing(store, sweep_toml, tmp_path):
    result = run("--features", store, "--config", sweep_toml, "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    ids = [t.trial_id for t in expand(load_sweep(sweep_toml), store_identity(FeatureStore(store)))]
    lines = [line.split() for line in result.output.splitlines() if line.startswith("  ")]
    assert [line[0] for line in lines] == ids
    assert "4 trial(s) (2 variant x 2 seed), 0 already done" in result.output
    assert "variant='mean'" in result.output and "variant='scalar', seed=1" in result.output
    assert not (tmp_path / "out").exists()


def test_in_process_run_then_rerun_skips_everything(store, sweep_toml, tmp_path):
    args = ["--features", store, "--config", sweep_toml, "--out", tmp_path / "out", "--workers", 0, "--set", "seed=1"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "2 trial(s) run, 0 already done, 0 failed" in result.output
    assert re.search(r"\| 1 \| `(mean|scalar)` \| 1 \|", result.output)
    assert f"report: {tmp_path / 'out' / 'report.md'} (with the eval EERs' 95 % intervals" in result.output
    # the printed table has no interval column (it is ranked without the bootstrap); the report's has one
    assert "95 % CI" not in result.output.split("report:")[0]
    assert "eval 95 % CI (speakers x attacks)" in (tmp_path / "out" / "report.md").read_text()
    assert len(pd.read_parquet(tmp_path / "out" / "results.parquet")) == 2
    assert (tmp_path / "out" / "report.md").read_text().count("**Codec weights: SYNTHETIC test codebooks") == 1

    result = run(*args)
    assert result.exit_code == 0 and "0 trial(s) run, 2 already done, 0 failed" in result.output
    dry = run(*args[:-2], "--dry-run")
    assert "4 trial(s) (2 variant x 2 seed), 2 already done" in dry.output
    assert sum("  done  " in line for line in dry.output.splitlines()) == 2


def test_failing_trials_give_exit_status_1_and_a_report(store, sweep_toml, tmp_path):
    result = run("--features", store, "--config", sweep_toml, "--out", tmp_path / "out", "--workers", 0,
                 "--set", "variant=latent")  # the store has no latent
    assert result.exit_code == 1
    assert "2 trial(s) run, 0 already done, 2 failed" in result.output
    assert "failed trial(s): latent-s0-" in result.output and "re-extract with --latent" in result.output
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(table["status"]) == ["failed", "failed"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Failed trials" in report and "No trial finished" in report


@pytest.mark.parametrize("args,message", [
    (["--set", "learning_rate=1"], "--set: unknown key(s) learning_rate; valid keys: amp, amp_cpu, amp_dtype"),
    (["--set", "variant=qaf-dynamic"], "tiny.toml: trial variant='qaf-dynamic', seed=0: unknown weighting variant 'qaf-dynamic'"),
    (["--eval-split", "test"], "no split 'test' to score (--eval-split); the store has dev, eval, train"),
])
def test_bad_input_fails_with_a_clear_message(store, sweep_toml, tmp_path, args, message):
    result = run("--features", store, "--config", sweep_toml, "--out", tmp_path / "out", "--workers", 0, *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_bad_files_are_named(store, sweep_toml, tmp_path):
    (tmp_path / "bad.toml").write_text("[grid]\nvariant = 'mean'\n")
    result = run("--features", store, "--config", tmp_path / "bad.toml", "--out", tmp_path / "o", "--dry-run")
    assert result.exit_code == 1 and "bad.toml [grid]: variant must be a non-empty list" in result.output
    result = run("--features", tmp_path / "none.zarr", "--config", sweep_toml, "--out", tmp_path / "o", "--dry-run")
    assert result.exit_code == 1 and "none.zarr: no feature store here" in result.output
    result = run("--features", store, "--config", sweep_toml, "--out", tmp_path / "o", "--set", "lr")
    assert result.exit_code == 2 and "expected key=value" in result.output


def test_shipped_sweeps_expand(store):
    """Every variant and the energy control x the LSTM and the stats head x 5 seeds, and every trial's
    model can be built (the stats head gets none of the LSTM's sizes)."""
    features = FeatureStore(store)
    identity = store_identity(features)
    trials = expand(load_sweep(ROOT / "configs" / "sweeps" / "variants.toml"), identity)
    variants = ["mean", "scalar", "qaf-static", "single:1", "single:8", "first:4", "cumulative", "latent",
                "trainable-tables", "energy"]
    assert sorted({t.config.variant for t in trials}) == sorted(variants) and len(trials) == 2 * 5 * len(variants)
    assert {t.config.seed for t in trials} == {0, 1, 2, 3, 4}
    assert {(t.config.head, json.dumps(t.config.head_kwargs)) for t in trials} == {
        ("lstm", json.dumps({"proj_dim": 96, "hidden_dim": 96})), ("stats", "{}")}
    codebooks = torch.from_numpy(features.codebooks)
    for t in trials[:: 5]:
        build_model(codebooks, t.config.variant, t.config.head, t.config.tau, t.config.head_kwargs)
    assert len(expand(load_sweep(ROOT / "configs" / "sweeps" / "tiny.toml"), identity)) == 4


@pytest.mark.slow
def test_local_cluster_of_two_workers(store, sweep_toml, tmp_path):
    result = run("--features", store, "--config", sweep_toml, "--out", tmp_path / "out", "--workers", 2)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(table["status"]) == ["ok"] * 4 and table["pid"].nunique() == 2
    assert (table["torch_threads"] == threads_per_worker(2)).all()


def test_eval_from_another_store_or_dev_alone(tmp_path, sweep_toml):
    """A sweep over a train+dev store scores its trials on dev alone and ranks them by dev EER, or
    takes the eval split from a separately extracted store of the same codec (--eval-features)."""
    traindev = synthetic_store(str(tmp_path / "td.zarr"), n_per_split=12, frames=(30, 60), latent=False,
                               splits=("train", "dev"))
    eval_only = synthetic_store(str(tmp_path / "e.zarr"), n_per_split=12, frames=(30, 60), latent=False,
                                splits=("eval",), seed=5)
    dev_only = run("--features", traindev, "--config", sweep_toml, "--out", tmp_path / "dev", "--workers", 0,
                   "--set", "seed=0")
    assert dev_only.exit_code == 0, dev_only.output
    assert "no split 'eval' (and no --eval-features): trials are scored on dev only" in dev_only.output
    table = pd.read_parquet(tmp_path / "dev" / "results.parquet")
    assert (table["status"] == "ok").all() and table["eval_eer"].isna().all() and (table["eval_store"] == "").all()
    report = (tmp_path / "dev" / "report.md").read_text()
    assert "## Ranking on dev (no eval split)" in report
    ranked = [line.split("`")[1] for line in dev_only.output.splitlines() if line.startswith("| ") and "`" in line]
    assert ranked == table.sort_values("dev_eer", kind="mergesort")["variant"].tolist()

    separate = run("--features", traindev, "--eval-features", eval_only, "--config", sweep_toml, "--out",
                   tmp_path / "sep", "--workers", 0, "--set", "seed=0")
    assert separate.exit_code == 0, separate.output
    table = pd.read_parquet(tmp_path / "sep" / "results.parquet")
    assert table["eval_eer"].notna().all() and (table["eval_store"] == eval_only).all()
    for trial_dir, eer in zip(table["trial_dir"], table["eval_eer"]):
        metrics = json.loads((Path(trial_dir) / "eval" / "metrics.json").read_text())
        assert metrics["store"] == eval_only and metrics["eer"] == eer and metrics["calibration"]["applied"]
    # the bootstrap intervals come from the separate eval store's speakers and attacks
    assert "bootstrap over the eval split's 4 speakers" in (tmp_path / "sep" / "report.md").read_text()

    other = synthetic_store(str(tmp_path / "o.zarr"), n_per_split=8, latent=False, splits=("eval",), weights_seed=4)
    refused = run("--features", traindev, "--eval-features", other, "--config", sweep_toml, "--out", tmp_path / "o")
    assert refused.exit_code == 1 and "holds features of another codec" in refused.output
    no_eval = run("--features", traindev, "--eval-features", traindev, "--config", sweep_toml, "--out", tmp_path / "n")
    assert no_eval.exit_code == 1 and "no split 'eval' (--eval-features)" in no_eval.output


def test_a_mistyped_head_kwargs_key_refuses_the_whole_file_before_any_trial(store, sweep_toml, tmp_path, monkeypatch):
    """One bad trial (a typo inside head_kwargs, in one grid bundle) refuses the file in one line naming
    the key and the head's keys, before any store is opened and before any trial runs."""
    import classify.sweep as sweep_module

    ran = []
    monkeypatch.setattr(sweep_module, "run_trial", lambda task: ran.append(task))
    monkeypatch.setattr("pipeline.commands.sweep.open_store", lambda url: ran.append(url))
    bad = sweep_toml.read_text().replace("[grid]", "[grid]\nhead = [\"lstm\", {head = \"asp\", "
                                                  "head_kwargs = {hiden_dim = 8}}]")
    (tmp_path / "typo.toml").write_text(bad)
    result = run("--features", store, "--config", tmp_path / "typo.toml", "--out", tmp_path / "out", "--workers", 0)
    assert result.exit_code == 1 and not ran, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Error:" in lines[0], result.output
    assert "head_kwargs of head asp: unknown key(s) hiden_dim; valid keys: proj_dim, attention_dim, hidden_dim" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_sweep_file_names_its_baseline(store, sweep_toml, tmp_path):
    spec = load_sweep(sweep_toml)
    assert spec.baseline == "mean"
    (tmp_path / "b.toml").write_text('baseline = "scalar"\n' + sweep_toml.read_text())
    assert load_sweep(tmp_path / "b.toml").baseline == "scalar"
    (tmp_path / "bad.toml").write_text('baseline = "meen"\n' + sweep_toml.read_text())
    result = run("--features", store, "--config", tmp_path / "bad.toml", "--out", tmp_path / "o", "--dry-run")
    assert result.exit_code == 1 and "bad.toml: baseline: unknown weighting variant 'meen'" in result.output
    assert load_sweep(ROOT / "configs" / "sweeps" / "paper.toml").baseline == "ssl"

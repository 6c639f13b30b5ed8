"""`pipeline train` and `pipeline evaluate` through click's test runner: runs and input errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from classify.config import TrainConfig
from common.config import load_config
from pipeline.commands.evaluate import command as evaluate_command
from pipeline.commands.train import command as train_command
from tests.synthetic import synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "configs" / "train" / "default.toml"
TINY = ["--set", "crop_seconds=0.8", "--set", "batch_size=8", "--set", "warmup_steps=0",
        "--set", "head_kwargs={proj_dim=16, hidden_dim=16}", "--device", "cpu"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return synthetic_store(str(tmp_path_factory.mktemp("cli") / "s.zarr"), n_per_split=12)


def run(command, args: list[str]):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_default_toml_equals_the_dataclass_defaults():
    assert dataclasses.asdict(load_config(TrainConfig, DEFAULT_TOML)) == dataclasses.asdict(TrainConfig())


def test_train_then_evaluate(store, tmp_path):
    result = run(train_command, ["--features", store, "--out", tmp_path / "run", "--epochs", 2, "--seed", 3,
                                 "--variant", "scalar", "--head", "lstm", *TINY])
    assert result.exit_code == 0, result.output
    assert "trainable parameters" in result.output and "SYNTHETIC test codebooks" in result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["seed"] == 3 and config["variant"] == "scalar" and config["head_kwargs"] == {"proj_dim": 16, "hidden_dim": 16}
    for name in ("best.pt", "last.pt", "history.jsonl", "training_curves.png", "level_weights.png"):
        assert (tmp_path / "run" / name).is_file(), name

    result = run(evaluate_command, ["--model", tmp_path / "run" / "best.pt", "--features", store, "--split", "eval",
                                    "--out", tmp_path / "eval", "--no-calibrate", "--format", "asvspoof5"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["scores_format"] == "asvspoof5" and metrics["n_scored"] == 12
    assert (tmp_path / "eval" / "scores.tsv").is_file() and "EER" in result.output


def test_config_file_and_set_override_it(store, tmp_path):
    (tmp_path / "c.toml").write_text('variant = "mean"\nepochs = 1\nlr = 0.5\n')
    result = run(train_command, ["--features", store, "--out", tmp_path / "run", "--config", tmp_path / "c.toml",
                                 "--set", "lr=2e-3", *TINY])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["variant"] == "mean" and config["epochs"] == 1 and config["lr"] == 2e-3


@pytest.mark.parametrize("args,message", [
    (["--variant", "qaf-dynamic"], "unknown weighting variant 'qaf-dynamic'; valid choices: mean, scalar, qaf-static"),
    (["--variant", "single:9"], "k=9 is out of range"),
    (["--head", "gru"], "unknown head 'gru'; valid choices: lstm, asp"),
    (["--set", "pad=reflect"], "unknown pad 'reflect'; valid choices: repeat, zero"),
    (["--set", "learning_rate=1"], "unknown key(s) learning_rate; valid keys:"),
    (["--set", "lr=fast"], "lr: expected float"),
    (["--train-split", "test"], "no split 'test'; the store has dev, eval, train"),
])
def test_bad_settings_fail_with_a_clear_message(store, tmp_path, args, message):
    result = run(train_command, ["--features", store, "--out", tmp_path / "run", "--epochs", 1, *TINY, *args])
    assert result.exit_code == 1 and message in result.output, result.output


def test_malformed_set_is_a_usage_error(store, tmp_path):
    result = run(train_command, ["--features", store, "--out", tmp_path / "run", "--set", "lr"])
    assert result.exit_code == 2 and "expected key=value" in result.output


def test_missing_store_is_named(tmp_path):
    result = run(train_command, ["--features", tmp_path / "none.zarr", "--out", tmp_path / "run"])
    assert result.exit_code == 1 and "none.zarr: no feature store here" in result.output


def test_divergence_exits_with_status_1(store, tmp_path):
    result = run(train_command, ["--features", store, "--out", tmp_path / "run", "--epochs", 1, "--set", "lr=1e30", *TINY])
    assert result.exit_code == 1 and "training stopped" in result.output and "became nan" in result.output.lower()
    assert "no checkpoint was saved" in result.output and result.output.count("training stopped") == 1


def test_evaluate_refuses_a_store_of_another_codec(store, tmp_path):
    assert run(train_command, ["--features", store, "--out", tmp_path / "run", "--epochs", 1, *TINY]).exit_code == 0
    other = synthetic_store(str(tmp_path / "o.zarr"), n_per_split=6, weights_seed=4)
    result = run(evaluate_command, ["--model", tmp_path / "run", "--features", other, "--out", tmp_path / "eval"])
    assert result.exit_code == 1 and "trained on features of another codec" in result.output


def test_checkpoint_and_metrics_record_what_made_them(store, tmp_path, monkeypatch):
    train_args = ["--features", store, "--out", tmp_path / "run", "--epochs", 1, *TINY]
    monkeypatch.setattr("sys.argv", ["pipeline", "train", *map(str, train_args)])
    assert run(train_command, train_args).exit_code == 0
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    trained_by = checkpoint["provenance"]
    assert trained_by["command"].startswith("pipeline train --features") and trained_by["device"] == "cpu"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["provenance"] == trained_by
    eval_args = ["--model", tmp_path / "run", "--features", store, "--out", tmp_path / "ev"]
    monkeypatch.setattr("sys.argv", ["pipeline", "evaluate", *map(str, eval_args)])
    assert run(evaluate_command, eval_args).exit_code == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["provenance"]["command"].startswith("pipeline evaluate --model")
    assert metrics["model_provenance"] == trained_by
    for record in (trained_by, metrics["provenance"]):
        assert record["version"] and "git" in record and "lock" in record


def test_a_mistyped_head_kwargs_key_is_refused_in_one_line_before_the_store_is_read(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr("pipeline.commands.train.FeatureStore", lambda *a, **k: opened.append(a))
    result = run(train_command, ["--features", tmp_path / "none.zarr", "--out", tmp_path / "run",
                                 "--set", "head_kwargs={proj_dim=16, hiden_dim=16}", "--device", "cpu"])
    assert result.exit_code == 1 and not opened, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["Error: config: head_kwargs of head lstm: unknown key(s) hiden_dim; valid keys: proj_dim, "
                     "hidden_dim"], result.output
    result = run(train_command, ["--features", tmp_path / "none.zarr", "--out", tmp_path / "run",
                                 "--set", "head_kwargs={proj_dim=1.5}"])
    assert result.exit_code == 1 and "head_kwargs of head lstm.proj_dim: expected int, got 1.5" in result.output
    result = run(train_command, ["--features", tmp_path / "none.zarr", "--out", tmp_path / "run",
                                 "--set", "ssl_kwargs={norm=1}"])
    assert result.exit_code == 1 and "ssl_kwargs.norm: expected true or false, got 1" in result.output
    assert not (tmp_path / "run").exists()


def test_a_run_folder_in_use_is_refused(store, tmp_path):
    from common.lease import Lease

    with Lease(str(tmp_path / "run"), "training run"):
        result = run(train_command, ["--features", store, "--out", tmp_path / "run", "--epochs", 1, *TINY])
    assert result.exit_code == 1 and "this training run is in use by another process" in result.output


def test_evaluate_turns_an_os_error_into_one_line(store, tmp_path):
    assert run(train_command, ["--features", store, "--out", tmp_path / "run", "--epochs", 1, *TINY]).exit_code == 0
    (tmp_path / "taken").write_text("a file where the output folder should go")
    result = run(evaluate_command, ["--model", tmp_path / "run", "--features", store, "--out", tmp_path / "taken" / "eval",
                                    "--no-calibrate"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: evaluation stopped: ") and "taken" in lines[0], result.output

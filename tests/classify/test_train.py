"""Training: it learns, it is reproducible, it resumes bit-exactly, it stops cleanly on NaN."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from classify import train as train_module
from classify.checkpoint import CheckpointError, load_checkpoint
from classify.config import TrainConfig, amp_dtype
from classify.data import DataError
from classify.train import DIVERGED, TrainingRun, lr_at, param_groups, train
from store.reader import FeatureStore
from tests.synthetic import synthetic_store, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    return FeatureStore(synthetic_store(str(tmp_path_factory.mktemp("train") / "s.zarr"), n_per_split=24))


def same_parameters(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_schedule_warms_up_linearly_then_decays_to_zero():
    rates = [lr_at(step, 100, 10, 1.0) for step in range(100)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert rates[10] == pytest.approx(1.0) and rates[55] == pytest.approx(0.5, abs=0.02)
    assert all(b <= a for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 1e-3
    assert lr_at(0, 100, 0, 1.0) == 1.0


def test_training_learns_and_writes_the_run_directory(store, tmp_path):
    logged: list[str] = []
    result = train(tiny_config(epochs=8, lr=3e-2), store, tmp_path, log=logged.append)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(1, 9)) and result.epochs_run == 8
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05
    assert result.best_dev_eer < 0.3 and result.stopped == "completed"
    assert result.best_dev_eer == min(row["dev_eer"] for row in history)
    label = store.codec.weights_label
    assert all(row["codec_weights"] == label and {"dev_min_dcf", "lr", "seconds"} <= row.keys() for row in history)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["codec_weights"] == label and config["config"]["epochs"] == 8
    for name in ("best.pt", "last.pt", "training_curves.png", "level_weights.png"):
        assert (tmp_path / name).is_file(), name
    n = result.n_trainable
    used = 7_425_792 + 8 * 64 * 16  # EnCodec's encoder + the store's codebooks (its decoder never runs)
    assert any(f"{n:,} trainable parameters = {100 * n / used:.2f} % of the {used:,} frozen parameters" in m
               for m in logged)
    assert config["trainable_share"]["frozen_total"] == used and config["trainable_share"]["paper_percent"] == 4.4
    assert any(label in m for m in logged)
    # level weights: QAF-Static alpha [Q, D] of the best epoch, a softmax over levels
    alpha = torch.tensor(result.level_weights)
    assert alpha.shape == (8, 16) and torch.allclose(alpha.sum(0), torch.ones(16))
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch


def test_same_seed_gives_identical_parameters(store, tmp_path):
    first = train(tiny_config(), store, tmp_path / "a", log=quiet)
    second = train(tiny_config(), store, tmp_path / "b", log=quiet)
    other = train(tiny_config(seed=1), store, tmp_path / "c", log=quiet)
    a, b, c = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in "abc")
    assert same_parameters(a, b) and first.best_dev_eer == second.best_dev_eer
    assert not same_parameters(a, c) and other.epochs_run == 2


@pytest.mark.parametrize("precision", [{}, {"amp_cpu": True, "amp_dtype": "fp16"}], ids=["fp32", "fp16-scaler"])
def test_resume_after_a_kill_ends_as_an_uninterrupted_run(store, tmp_path, monkeypatch, precision):
    """Also with fp16 autocast and its gradient scaler (the GPU's code path, on the CPU): the scaler's
    state is part of the checkpoint."""
    config = tiny_config(epochs=3, balance="sampler", pad="zero", **precision)
    train(config, store, tmp_path / "whole", log=quiet)

    original = train_module.TrainingRun.run_epoch

    def killed_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self, epoch)

    monkeypatch.setattr(train_module.TrainingRun, "run_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(config, store, tmp_path / "killed", log=quiet)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_module.TrainingRun, "run_epoch", original)
    logged: list[str] = []
    result = train(config, store, tmp_path / "killed", log=logged.append)
    assert any("resuming" in m and "after epoch 1" in m for m in logged)
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert same_parameters(whole["model"], resumed["model"]) and result.epochs_run == 3
    assert whole["scaler"] == resumed["scaler"] and bool(whole["scaler"]) == bool(precision)
    assert [g["name"] for g in resumed["optimizer"]["param_groups"]] == ["model", "hierarchy_weights"]
    strip = [{k: v for k, v in row.items() if "seconds" not in k} for row in whole["history"]]
    assert strip == [{k: v for k, v in row.items() if "seconds" not in k} for row in resumed["history"]]
    lines = (tmp_path / "killed" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_finished_run_is_not_trained_again_and_can_be_extended(store, tmp_path):
    train(tiny_config(epochs=1), store, tmp_path, log=quiet)
    again = train(tiny_config(epochs=1), store, tmp_path, log=quiet)
    assert again.epochs_run == 1 and again.stopped == "completed"
    logged: list[str] = []
    longer = train(tiny_config(epochs=2), store, tmp_path, log=logged.append)
    assert longer.epochs_run == 2 and any("extending" in m for m in logged)


def test_resume_with_other_settings_is_refused(store, tmp_path):
    train(tiny_config(epochs=1), store, tmp_path, log=quiet)
    with pytest.raises(CheckpointError, match=r"last\.pt holds a run with other settings \(lr: run 0\.01, now 0\.5\)"):
        train(tiny_config(epochs=1, lr=0.5), store, tmp_path, log=quiet)
    fresh = train(tiny_config(epochs=1, lr=0.5), store, tmp_path, log=quiet, resume=False)
    assert fresh.epochs_run == 1


def test_a_checkpoint_older_than_ssl_kwargs_resumes(store, tmp_path):
    """A run saved before TrainConfig had ssl_kwargs (migrated from version 1) ran as ssl_kwargs = {} does: it
    resumes, and is extended like any other; a real difference is still refused."""
    train(tiny_config(epochs=1), store, tmp_path, log=quiet)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["config"]["ssl_kwargs"]
    state["format_version"] = 1  # such a checkpoint is of format version 1 (`classify.migrations`)
    torch.save(state, tmp_path / "last.pt")
    logged: list[str] = []
    result = train(tiny_config(epochs=2), store, tmp_path, log=logged.append)
    assert result.epochs_run == 2 and any("resuming" in line and "after epoch 1" in line for line in logged)
    with pytest.raises(CheckpointError, match=r"ssl_kwargs: run \{\}, now \{'proj_dim': 8\}"):
        train(tiny_config(epochs=3, ssl_kwargs={"proj_dim": 8}), store, tmp_path, log=quiet)


def test_resume_on_a_store_of_another_codec_is_refused(store, tmp_path):
    train(tiny_config(epochs=1), store, tmp_path / "run", log=quiet)
    other = FeatureStore(synthetic_store(str(tmp_path / "other.zarr"), n_per_split=8, weights_seed=3))
    with pytest.raises(CheckpointError, match="another codec.*weights_sha256"):
        train(tiny_config(epochs=2), other, tmp_path / "run", log=quiet)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(store, tmp_path, monkeypatch):
    real = train_module.F.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def nan_after_epoch_1(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss  # 3 steps per epoch

    monkeypatch.setattr(train_module.F, "binary_cross_entropy_with_logits", nan_after_epoch_1)
    logged: list[str] = []
    result = train(tiny_config(epochs=3), store, tmp_path, log=logged.append)
    assert result.stopped == DIVERGED and result.epochs_run == 1
    assert "loss became nan at epoch 2, step 4" in result.message and "last.pt (epoch 1)" in result.message
    assert any(result.message in m for m in logged)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1


def test_huge_learning_rate_diverges_without_a_checkpoint(store, tmp_path):
    result = train(tiny_config(epochs=1, lr=1e30), store, tmp_path, log=quiet)
    assert result.stopped == DIVERGED and "no checkpoint was saved" in result.message
    assert math.isnan(result.best_dev_eer) and not (tmp_path / "last.pt").exists()


def test_one_class_dev_split_is_refused(tmp_path):
    store = FeatureStore(synthetic_store(str(tmp_path / "one.zarr"), n_per_split=6, spoof_only=("dev",)))
    with pytest.raises(DataError, match=r"one\.zarr: split 'dev' has spoof utterances only"):
        train(tiny_config(), store, tmp_path / "run", log=quiet)


def test_latent_variant_reads_the_latent_in_ram_or_lazily_alike(store, tmp_path):
    in_ram = train(tiny_config(epochs=1, variant="latent"), store, tmp_path / "ram", log=quiet)
    lazy = train(tiny_config(epochs=1, variant="latent", latent_ram_mb=0.0), store, tmp_path / "lazy", log=quiet)
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("ram", "lazy"))
    assert same_parameters(a, b) and in_ram.level_weights is None and lazy.best_dev_eer == in_ram.best_dev_eer
    assert not (tmp_path / "ram" / "level_weights.png").exists()


@pytest.mark.parametrize("variant,shape", [("scalar", (8,)), ("single:2", (8,)), ("first:3", (8,))])
def test_level_variants_report_one_weight_per_level(store, tmp_path, variant, shape):
    result = train(tiny_config(epochs=1, head="asp", head_kwargs={"proj_dim": 8, "attention_dim": 4, "hidden_dim": 8},
                               variant=variant), store, tmp_path, log=quiet)
    assert torch.tensor(result.level_weights).shape == shape and (tmp_path / "level_weights.png").is_file()


def test_config_rejects_unknown_choices():
    for field, value, choices in [("variant", "nope", "qaf-static"), ("head", "gru", "lstm, asp"),
                                  ("pad", "reflect", "repeat, zero"), ("balance", "x", "weighted-loss")]:
        with pytest.raises(ValueError, match=f"{value}.*valid choices: .*{choices}"):
            TrainConfig(**{field: value})


def test_early_stopping_and_extending_with_more_patience(store, tmp_path):
    frozen = tiny_config(epochs=6, lr=1e-12, weights_lr=1e-12, patience=2)  # the dev EER cannot improve after epoch 1
    result = train(frozen, store, tmp_path, log=quiet)
    assert result.stopped == "early stopping" and result.epochs_run == 3 and result.best_epoch == 1
    logged: list[str] = []
    more = train(dataclasses.replace(frozen, patience=3), store, tmp_path, log=logged.append)
    assert any("extending the run (early stopping after epoch 3)" in m for m in logged)
    assert more.stopped == "early stopping" and more.epochs_run == 4


def test_mixed_precision_on_cuda_and_on_the_cpu_when_asked():
    assert amp_dtype(TrainConfig(), torch.device("cpu")) is None
    assert amp_dtype(TrainConfig(), torch.device("cuda")) == torch.bfloat16
    assert amp_dtype(TrainConfig(amp_dtype="fp16"), torch.device("cuda")) == torch.float16
    assert amp_dtype(TrainConfig(amp=False), torch.device("cuda")) is None
    assert amp_dtype(TrainConfig(amp_cpu=True), torch.device("cpu")) == torch.bfloat16
    assert amp_dtype(TrainConfig(amp_cpu=True, amp=False), torch.device("cpu")) is None


@pytest.mark.parametrize("dtype_name,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_training_path_runs_on_the_cpu(store, tmp_path, monkeypatch, dtype_name, dtype):
    """The code a GPU run takes (autocast on the device type, a GradScaler for fp16), run on the CPU:
    the head computes in the low precision, the loss and every parameter stay float32 and finite,
    the model learns, and fp16 scales its loss."""
    seen: list[torch.dtype] = []
    original = TrainingRun.step

    def step(self, batch, targets):
        handle = self.model.head.proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        try:
            return original(self, batch, targets)
        finally:
            handle.remove()

    monkeypatch.setattr(TrainingRun, "step", step)
    result = train(tiny_config(epochs=8, lr=3e-2, amp_cpu=True, amp_dtype=dtype_name), store, tmp_path, log=quiet)
    assert seen and set(seen) == {dtype}
    assert result.stopped == "completed" and result.best_dev_eer < 0.3
    last = load_checkpoint(tmp_path / "last.pt")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    if dtype == torch.float16:
        assert last["scaler"]["scale"] > 0 and last["scaler"]["_growth_tracker"] >= 0
    else:
        assert last["scaler"] == {}


def test_fp16_gradient_scaler_skips_an_overflowing_step_and_backs_off(store, tmp_path):
    """With a loss scale so large that the fp16 backward overflows, the scaler skips the optimizer step
    (parameters unchanged) and halves the scale; once the scale fits, steps go through."""
    run = TrainingRun(tiny_config(amp_cpu=True, amp_dtype="fp16"), store, tmp_path, quiet)
    assert run.scaler.is_enabled() and run.dtype == torch.float16
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=1000)
    batch, targets = next(run.source.train_batches(run.train_data, 8, run.crop, "repeat", "none", run.generator))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.step(batch, torch.from_numpy(targets))
    assert same_parameters(before, run.model.state_dict()) and run.scaler.get_scale() == 2.0**39
    for _ in range(40):
        run.step(batch, torch.from_numpy(targets))
        if not same_parameters(before, run.model.state_dict()):
            break
    assert not same_parameters(before, run.model.state_dict()) and run.scaler.get_scale() < 2.0**32


def test_hierarchy_weights_have_their_own_learning_rate_without_weight_decay(store, tmp_path):
    config = tiny_config(epochs=1, lr=2e-3, weights_lr=0.3, weight_decay=0.5)
    run = TrainingRun(config, store, tmp_path, quiet)
    groups = {g["name"]: g for g in run.optimizer.param_groups}
    assert [p is run.model.weighting.weights for p in groups["hierarchy_weights"]["params"]] == [True]
    assert (groups["hierarchy_weights"]["peak_lr"], groups["hierarchy_weights"]["weight_decay"]) == (0.3, 0.0)
    assert (groups["model"]["peak_lr"], groups["model"]["weight_decay"]) == (2e-3, 0.5)
    n_model = sum(p.numel() for p in groups["model"]["params"])
    assert n_model + run.model.weighting.weights.numel() == run.model.n_trainable()
    run.run_epoch(1)
    last = run.progress.step - 1
    assert groups["hierarchy_weights"]["lr"] == lr_at(last, run.total_steps, run.warmup, 0.3)
    assert groups["model"]["lr"] == lr_at(last, run.total_steps, run.warmup, 2e-3)
    # variants without logits have one group; trainable tables train at lr, their logits at weights_lr
    assert [g["name"] for g in param_groups(TrainingRun(tiny_config(variant="mean"), store, tmp_path, quiet).model,
                                              config)] == ["model"]
    tables = TrainingRun(tiny_config(variant="trainable-tables"), store, tmp_path, quiet).model
    groups = param_groups(tables, config)
    assert any(p is tables.weighting.table for p in groups[0]["params"]) and groups[1]["params"] == [tables.weighting.weights]


def test_train_holds_the_run_folders_lease_whoever_calls_it(store, tmp_path, monkeypatch):
    """train() takes --out's lease itself (so `demo` and the Python API are covered): held during the
    run, refused while another holder has it, and one given by the caller (a sweep trial's) is used."""
    from common.lease import LOCK, Lease, LeaseHeld

    seen = []
    real_epoch = train_module.TrainingRun.run_epoch

    def spy(self, epoch):
        seen.append(json.loads((self.out_dir / LOCK).read_text())["holder"])
        return real_epoch(self, epoch)

    monkeypatch.setattr(train_module.TrainingRun, "run_epoch", spy)
    train(tiny_config(epochs=1), store, tmp_path / "run", log=quiet)
    assert seen == ["training run"] and not (tmp_path / "run" / LOCK).exists()
    with Lease(str(tmp_path / "other"), "sweep trial") as held:
        with pytest.raises(LeaseHeld, match="in use by another process"):
            train(tiny_config(epochs=1), store, tmp_path / "other", log=quiet)
        train(tiny_config(epochs=1), store, tmp_path / "other", log=quiet, lease=held)
    assert seen[-1] == "sweep trial"

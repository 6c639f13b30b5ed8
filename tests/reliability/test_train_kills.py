"""kill -9 of `pipeline train` and `pipeline sweep`, then a re-run; two runs into one folder.

Training continues from its last checkpoint and, on the CPU with a fixed seed and thread count,
ends bit-identical to an uninterrupted run; a sweep never repeats a trial whose row is recorded,
its results.parquet is never torn, and a dask worker killed mid-trial is replaced by one that
resumes the trial. A second `train` into a folder in use is refused, naming the holder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from click.testing import CliRunner

from classify.checkpoint import load_checkpoint
from classify.config import TrainConfig
from classify.sweep import expand, load_sweep, run_sweep, run_trial, store_identity
from classify.train import train
from pipeline.cli import main
from store.reader import FeatureStore
from tests.synthetic import synthetic_store

from .helpers import ONE_THREAD, TRAIN_SETTINGS, history_lines, run_pipeline, sweep_toml

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SWEEP = sweep_toml(epochs=2, seeds=[0, 1])
METRIC_COLUMNS = ["trial_id", "status", "dev_eer", "eval_eer", "eval_min_dcf", "best_dev_eer", "epochs_run", "level_weights"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    # 96 training utterances in batches of 4: epochs of 24 steps, long enough to be killed in
    return synthetic_store(str(tmp_path_factory.mktemp("kills") / "s.zarr"), n_per_split=96, latent=False)


def train_args(store: str, run: Path, epochs: int) -> list[str]:
    return ["train", "--features", store, "--out", str(run), "--epochs", str(epochs), *TRAIN_SETTINGS]


def after_epochs(run: Path, n: int, delay: float = 0.0):
    """Kill ``delay`` seconds after ``n`` more epochs than now are in history.jsonl (mid-epoch)."""
    seen = {}

    def when(elapsed: float) -> bool:
        seen.setdefault("base", history_lines(run))
        if "t" not in seen and history_lines(run) >= seen["base"] + n:
            seen["t"] = elapsed
        return "t" in seen and elapsed - seen["t"] >= delay
    return when


def same_run(a: Path, b: Path) -> None:
    """Bit-identical parameters and optimizer state, the same history (but its timings)."""
    x, y = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert x["model"].keys() == y["model"].keys() and all(torch.equal(x["model"][k], y["model"][k]) for k in x["model"])
    assert x["epoch"] == y["epoch"] and x["schedule"] == y["schedule"]
    strip = [[{k: v for k, v in row.items() if "seconds" not in k} for row in c["history"]] for c in (x, y)]
    assert strip[0] == strip[1]
    lines = [json.loads(line) for line in (a / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == list(range(1, y["epoch"] + 1))


def train_kill_loop(store: str, run: Path, epochs: int, plan: list[tuple[str, dict]], logs: Path) -> list[dict]:
    records = []
    for label, kill in plan:
        before = history_lines(run)
        outcome = run_pipeline(train_args(store, run, epochs), logs, env=ONE_THREAD, **kill)
        records.append({"kill": label, "killed": outcome.killed, "epochs_before": before, "epochs_after": history_lines(run),
                        "seconds": round(outcome.seconds, 1), "output": outcome.stdout + outcome.stderr})
        assert outcome.killed, outcome.stderr[-2000:]
        if (run / "last.pt").exists():
            load_checkpoint(run / "last.pt")  # never torn
    final = run_pipeline(train_args(store, run, epochs), logs, env=ONE_THREAD)
    assert final.returncode == 0, final.stderr[-2000:]
    records.append({"kill": "none (final run)", "killed": False, "seconds": round(final.seconds, 1),
                    "output": final.stdout + final.stderr})
    return records


def uninterrupted(store: str, run: Path, epochs: int) -> Path:
    """The same training, in this process (one torch thread, as the killed runs')."""
    values = dict(epochs=epochs, device="cpu", batch_size=4, lr=1e-2, warmup_steps=0, crop_seconds=0.8, patience=0,
                  head_kwargs={"proj_dim": 16, "hidden_dim": 16})
    train(TrainConfig(**values), FeatureStore(store), run, log=lambda _: None)
    return run


def test_train_killed_twice_ends_bit_identical_and_a_second_run_is_refused(store, tmp_path):
    whole = uninterrupted(store, tmp_path / "whole", 3)
    run = tmp_path / "run"
    refused = {}

    def second_run_while_alive(proc) -> None:
        if not refused and (run / "lock.json").exists() and history_lines(run) >= 1:
            refused["result"] = CliRunner().invoke(main, train_args(store, run, 3))
            refused["pid"] = proc.pid

    plan = [("fault checkpoint:before-replace (best.pt replaced, last.pt not)", {"fault": "checkpoint:before-replace@2"}),
            ("SIGKILL mid-epoch, a second run refused before", {"kill_when": after_epochs(run, 1, 0.2),
                                                                 "on_poll": second_run_while_alive})]
    records = train_kill_loop(store, run, 3, plan, tmp_path / "logs")
    assert records[0]["epochs_after"] == 0  # killed while saving the first epoch's last.pt: nothing to resume
    second = refused["result"]
    assert second.exit_code == 1 and "this training run is in use by another process" in second.output
    assert f"pid {refused['pid']}" in second.output and "host " in second.output and "started " in second.output
    assert "taking over the lease" in records[-1]["output"] and "resuming" in records[-1]["output"]
    same_run(run, whole)


def committed_after(kill: dict, steps: int) -> tuple[int, int]:
    """(fewest, most) whole epochs a run killed by ``kill`` commits (checkpoint and history line):
    step N lies in epoch (N - 1) // S + 1, so exactly (N - 1) // S before it; the N-th checkpoint save
    (one or two per epoch: best.pt when the dev EER improved, then last.pt) after at most N - 1."""
    if "kill_at_step" in kill:
        done = (kill["kill_at_step"] - 1) // steps
        return done, done
    nth = int(kill["fault"].partition("@")[2] or 1)
    return (nth - 1) // 2, nth - 1


@pytest.mark.slow
@pytest.mark.soak
def test_train_kill_loop(store, tmp_path):
    """Every kill is placed by the killed process itself (an optimizer step or a checkpoint fault
    point), and the plan leaves each killed run more epochs than it may finish: every planned kill
    fires, on a fast machine or a loaded one, and lands where planned."""
    import re

    started = time.monotonic()
    epochs = 8
    whole = tmp_path / "whole"
    reference = run_pipeline(train_args(store, whole, epochs), tmp_path / "logs", env=ONE_THREAD)
    assert reference.returncode == 0, reference.stderr[-2000:]
    steps = int(re.search(r"(\d+) steps per epoch", reference.stdout + reference.stderr).group(1))
    run = tmp_path / "run"
    plan = [("SIGKILL after epoch 1's last step, before its checkpoint", {"kill_at_step": steps}),
            ("SIGKILL just after epoch 1's checkpoint and history line", {"kill_at_step": steps + 1}),
            ("fault checkpoint:before-replace", {"fault": "checkpoint:before-replace@1"}),
            ("SIGKILL mid-epoch", {"kill_at_step": steps + steps // 2}),
            ("fault checkpoint:before-replace (2nd save)", {"fault": "checkpoint:before-replace@2"}),
            ("SIGKILL mid-epoch after 2 epochs", {"kill_at_step": 2 * steps + 7}),
            ("SIGKILL early in the first epoch", {"kill_at_step": 3}),
            ("fault checkpoint:before-replace", {"fault": "checkpoint:before-replace@1"})]
    most = sum(committed_after(kill, steps)[1] for _, kill in plan)
    assert most + max(committed_after(kill, steps)[1] + 1 for _, kill in plan) <= epochs  # work left for every kill
    records = train_kill_loop(store, run, epochs, plan, tmp_path / "logs")
    print(f"\ntrain kill loop: {sum(r['killed'] for r in records)} kills in {len(records)} runs, "
          f"{time.monotonic() - started:.0f} s")
    for r in records:
        print("  ", {k: v for k, v in r.items() if k != "output"})
    assert [r["killed"] for r in records] == [True] * len(plan) + [False]  # every planned kill fired
    for (label, kill), r in zip(plan, records):
        low, high = committed_after(kill, steps)
        assert low <= r["epochs_after"] - r["epochs_before"] <= high, (label, r["epochs_before"], r["epochs_after"])
    same_run(run, whole)


# -- sweeps -----------------------------------------------------------------------------------------


def sweep_args(store: str, config: Path, out: Path, workers: int) -> list[str]:
    return ["sweep", "--features", store, "--config", str(config), "--out", str(out), "--workers", str(workers)]


def model_lines(out: Path) -> dict[str, int]:
    """How many times train() started in each trial (its log's "model:" lines)."""
    return {log.parent.name: log.read_text().count(" model: variant ") for log in out.glob("trials/*/trial.log")}


def results(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet")[METRIC_COLUMNS].sort_values("trial_id").reset_index(drop=True)


@pytest.fixture
def sweep_toml(tmp_path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    return path


def sweep_kill_loop(store, config, out, workers, plan, logs) -> list[dict]:
    records = []
    for label, kill in plan:
        recorded = set(pd.read_parquet(out / "results.parquet")["trial_id"]) if (out / "results.parquet").exists() else set()
        starts = model_lines(out)
        outcome = run_pipeline(sweep_args(store, config, out, workers), logs, env=ONE_THREAD, orphans_grace=1.0, **kill)
        rows = pd.read_parquet(out / "results.parquet") if (out / "results.parquet").exists() else pd.DataFrame()  # never torn
        after = model_lines(out)
        repeated = [t for t in recorded if after.get(t) != starts.get(t)]
        records.append({"kill": label, "killed": outcome.killed, "rows_before": len(recorded), "rows_after": len(rows),
                        "repeated": repeated, "seconds": round(outcome.seconds, 1)})
        assert repeated == []  # a trial with a row is never trained again
    final_starts = model_lines(out)
    recorded = set(pd.read_parquet(out / "results.parquet")["trial_id"]) if (out / "results.parquet").exists() else set()
    final = run_pipeline(sweep_args(store, config, out, workers), logs, env=ONE_THREAD)
    assert final.returncode == 0, final.stderr[-2000:]
    assert all(model_lines(out).get(t) == final_starts.get(t) for t in recorded)
    records.append({"kill": "none (final run)", "killed": False, "seconds": round(final.seconds, 1)})
    return records


def uninterrupted_sweep(store: str, config: Path, out: Path) -> Path:
    """The same sweep, in this process (one torch thread, as the killed runs')."""
    trials = expand(load_sweep(config), store_identity(FeatureStore(store)))
    run_sweep(trials, store, out, "eval", lambda tasks: map(run_trial, tasks))
    return out


def test_sweep_killed_keeps_its_results_whole_and_never_repeats_a_trial(store, sweep_toml, tmp_path):
    whole = uninterrupted_sweep(store, sweep_toml, tmp_path / "whole")
    out = tmp_path / "out"
    plan = [("fault sweep:before-results-replace (2nd trial's row)", {"fault": "sweep:before-results-replace@2"})]
    records = sweep_kill_loop(store, sweep_toml, out, 0, plan, tmp_path / "logs")
    assert records[0]["killed"] and records[0]["rows_after"] == 1  # the first row, whole; the second not written
    pd.testing.assert_frame_equal(results(out), results(whole))


def _kill_a_worker_mid_trial(out: Path, done: dict):
    """SIGKILL the dask worker that runs a trial once that trial has finished an epoch."""
    def act(proc) -> None:
        if done:
            return
        for lock in out.glob("trials/*/lock.json"):
            if history_lines(lock.parent) >= 1:
                try:
                    pid = json.loads(lock.read_text())["pid"]
                    if pid != proc.pid and psutil.pid_exists(pid):
                        psutil.Process(pid).kill()
                        done.update(trial=lock.parent.name, pid=pid)
                        return
                except (OSError, ValueError, psutil.NoSuchProcess):
                    pass
    return act


@pytest.mark.slow
@pytest.mark.soak
def test_sweep_kill_loop_with_a_worker_killed_mid_trial(store, sweep_toml, tmp_path):
    started = time.monotonic()
    whole = tmp_path / "whole"
    assert run_pipeline(sweep_args(store, sweep_toml, whole, 0), tmp_path / "logs", env=ONE_THREAD).returncode == 0
    out = tmp_path / "out"
    worker: dict = {}

    def recorded() -> set[str]:
        return set(pd.read_parquet(out / "results.parquet")["trial_id"]) if (out / "results.parquet").exists() else set()

    def after_worker_and_a_row(_elapsed: float) -> bool:
        return bool(worker) and len(recorded()) >= 1

    def mid_trial(_elapsed: float) -> bool:
        return any(history_lines(d) >= 1 for d in out.glob("trials/*") if d.name not in recorded())

    plan = [("a dask worker killed mid-trial, then the sweep after 1 row", {
                "on_poll": _kill_a_worker_mid_trial(out, worker), "kill_when": after_worker_and_a_row}),
            ("fault sweep:before-results-replace", {"fault": "sweep:before-results-replace@1"}),
            ("SIGKILL mid-trial", {"kill_when": mid_trial})]
    records = sweep_kill_loop(store, sweep_toml, out, 2, plan, tmp_path / "logs")
    kills = sum(r["killed"] for r in records) + bool(worker)
    print(f"\nsweep kill loop (2 workers): {kills} kills (one a worker mid-trial, {worker}) in {len(records)} runs, "
          f"{time.monotonic() - started:.0f} s")
    for r in records:
        print("  ", r)
    assert worker, "no worker was killed mid-trial"
    log = (out / "trials" / worker["trial"] / "trial.log").read_text()
    assert "taking over the lease" in log and "resuming" in log
    pd.testing.assert_frame_equal(results(out), results(whole))

"""What one training epoch and one scoring pass cost per head, and what a sweep file will cost.

    PYTHONPATH=. python bench/bench_epoch.py --store STORE [--sweep configs/sweeps/variants.toml]
        [--heads lstm:64 lstm:256x288 stats] [--crop 1.5] [--epochs 2] [--workers 2] [--json FILE]

For every head (``lstm:P`` a P-unit projection and P-unit LSTM, ``lstm:PxH``, ``asp``, ``stats``,
``stats-levels``) with the qaf-static weighting: build the training loop's own ``classify.train.TrainingRun``
on the store's train split, take one warm-up step, then time ``--epochs`` calls of ``run_epoch``
(crops, gather, forward, backward, AdamW) and of ``dev_metrics`` (scoring the whole dev split and its
EER), each as process CPU time and wall time, with one torch thread (what a sweep worker gets on
2 cores with 2 workers). The median of the timed epochs is reported.

With ``--sweep``: the sweep file's trials (its [base] plus grid, exactly as ``pipeline sweep``
expands them) are costed from those measurements: a trial costs epochs x (train epoch + dev
scoring) + the final scoring (`classify.sweep.run_trial` evaluates dev and eval, and each
evaluation scores dev once more for its calibration: 3 dev passes + 1 eval pass, eval counted as
its size relative to dev) + a fixed overhead per trial (plots, checkpoints, calibration fits),
measured here as the CPU time of a whole 1-epoch `run_trial` of the stats head minus its measured
parts (``--overhead`` gives it instead). Trials are spread evenly over ``--workers``; heads or
crops of the sweep that were not measured are measured too. CPU seconds are the basis (a worker
with a whole core); wall times under this machine's load are printed beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
import torch

from classify.config import TrainConfig
from classify.sweep import expand, load_sweep, store_identity
from classify.train import TrainingRun
from store.reader import FeatureStore


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def head_config(spec: str) -> tuple[str, dict[str, Any]]:
    """``lstm:64`` / ``lstm:256x288`` / ``asp`` / ``stats`` / ``stats-levels`` -> (head, head_kwargs)."""
    name, _, size = spec.partition(":")
    if name == "lstm":
        proj, _, hidden = size.partition("x")
        return "lstm", ({} if not size else {"proj_dim": int(proj), "hidden_dim": int(hidden or proj)})
    if name == "stats-levels":
        return "stats", {"per_level": True}
    return name, {}


def spec_of(head: str, kwargs: dict[str, Any]) -> str:
    if head == "lstm":
        return f"lstm:{kwargs.get('proj_dim', 256)}x{kwargs.get('hidden_dim', 288)}"
    if head == "stats" and kwargs.get("per_level"):
        return "stats-levels"
    return head


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(store: FeatureStore, head: str, kwargs: dict[str, Any], crop: float, batch: int, epochs: int,
            variant: str) -> dict[str, Any]:
    config = TrainConfig(variant=variant, head=head, head_kwargs=kwargs, crop_seconds=crop, batch_size=batch,
                         epochs=epochs + 1, patience=0, device="cpu", seed=0)
    with_tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_epoch_run"
    run = TrainingRun(config, store, with_tmp, lambda _: None)
    batch0, targets = next(run.source.train_batches(run.train_data, batch, run.crop, config.pad, config.balance,
                                                    torch.Generator().manual_seed(1)))
    run.step(batch0, torch.from_numpy(targets))  # warm-up
    train_cpu, train_wall, dev_cpu, dev_wall = [], [], [], []
    before = loadavg()
    for epoch in range(1, epochs + 1):
        c, w = timed(lambda: run.run_epoch(epoch))
        train_cpu.append(c), train_wall.append(w)
        c, w = timed(run.dev_metrics)
        dev_cpu.append(c), dev_wall.append(w)
    return {"head": spec_of(head, kwargs), "head_kwargs": kwargs, "crop_seconds": crop, "batch_size": batch,
            "variant": variant, "n_trainable": run.model.n_trainable(), "steps_per_epoch": run.steps_per_epoch,
            "train_epoch_cpu": statistics.median(train_cpu), "train_epoch_wall": statistics.median(train_wall),
            "dev_score_cpu": statistics.median(dev_cpu), "dev_score_wall": statistics.median(dev_wall),
            "load_before": before, "load_after": loadavg()}


def measure_overhead(store: FeatureStore, results: dict[tuple, dict[str, Any]], crop: float, batch: int,
                     epochs: int) -> float:
    """CPU seconds of a 1-epoch stats-head trial (`run_trial`) beyond its epoch and scoring passes."""
    import shutil
    import tempfile

    from classify.sweep import TrialTask, run_trial

    key = ("stats", crop, batch)
    if key not in results:
        results[key] = measure(store, "stats", {}, crop, batch, epochs, "qaf-static")
    m = results[key]
    config = TrainConfig(variant="qaf-static", head="stats", epochs=1, patience=0, crop_seconds=crop,
                         batch_size=batch, device="cpu")
    folder = tempfile.mkdtemp(prefix="bench_epoch_trial")
    task = TrialTask("t", dataclasses.asdict(config), {}, store.url, folder, "eval", 1, None)
    run_trial(task)  # first trial of the process: imports (scikit-learn, plotting)
    shutil.rmtree(folder)
    cpu = time.process_time()
    run_trial(task)
    cpu = time.process_time() - cpu
    shutil.rmtree(folder)
    return max(0.0, cpu - m["train_epoch_cpu"] - m["dev_score_cpu"] * (1 + _scoring_passes(store)))


def _scoring_passes(store: FeatureStore) -> float:
    """Dev-equivalent scoring passes of a trial's final evaluation: 3 dev + 1 eval."""
    table = store.utterances
    ok = table["status"] == "ok"
    return 3 + int(((table["split"] == "eval") & ok).sum()) / int(((table["split"] == "dev") & ok).sum())


def estimate(store: FeatureStore, sweep: str, results: dict[tuple, dict[str, Any]], args) -> dict[str, Any]:
    spec = load_sweep(sweep)
    trials = expand(spec, store_identity(store))
    passes = _scoring_passes(store)
    per_trial = []
    for trial in trials:
        c = trial.config
        key = (spec_of(c.head, c.head_kwargs), c.crop_seconds, c.batch_size)
        if key not in results:
            results[key] = measure(store, c.head, c.head_kwargs, c.crop_seconds, c.batch_size, args.epochs, "qaf-static")
        m = results[key]
        scoring = m["dev_score_cpu"] * passes
        per_trial.append(c.epochs * (m["train_epoch_cpu"] + m["dev_score_cpu"]) + scoring + args.overhead)
    total = sum(per_trial)
    return {"sweep": sweep, "trials": len(trials), "shape": spec.shape(), "base": spec.base,
            "overhead_per_trial": args.overhead, "cpu_seconds_total": total, "workers": args.workers,
            "estimate_seconds": total / args.workers, "longest_trial_seconds": max(per_trial)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--heads", nargs="*", default=["lstm:64", "lstm:256x288", "stats"])
    parser.add_argument("--crop", type=float, default=1.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variant", default="qaf-static")
    parser.add_argument("--sweep", nargs="*", default=[])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overhead", type=float, default=None,
                        help="fixed CPU seconds per trial (default: measured with a 1-epoch stats trial)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    store = FeatureStore(args.store)
    started = time.perf_counter()
    results: dict[tuple, dict[str, Any]] = {}
    for spec in args.heads:
        head, kwargs = head_config(spec)
        results[(spec_of(head, kwargs), args.crop, args.batch)] = measure(store, head, kwargs, args.crop, args.batch,
                                                                          args.epochs, args.variant)
    if args.sweep and args.overhead is None:
        args.overhead = measure_overhead(store, results, args.crop, args.batch, args.epochs)
    sweeps = [estimate(store, path, results, args) for path in args.sweep]

    print(f"# Epoch cost per head\n\nstore `{args.store}` ({store.codec.weights_label}); "
          f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread, "
          f"{os.cpu_count()} cores; {args.epochs} timed epochs (median)\n")
    print("| head | trainable | crop s | steps/epoch | train epoch CPU s | wall s | dev scoring CPU s | wall s | load before -> after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in results.values():
        print(f"| {m['head']} | {m['n_trainable']:,} | {m['crop_seconds']} | {m['steps_per_epoch']} | "
              f"{m['train_epoch_cpu']:.2f} | {m['train_epoch_wall']:.2f} | {m['dev_score_cpu']:.2f} | "
              f"{m['dev_score_wall']:.2f} | {m['load_before']} -> {m['load_after']} |")
    if sweeps:
        print(f"\nfixed overhead per trial (plots, checkpoints, calibration): {args.overhead:.2f} CPU s")
    for s in sweeps:
        print(f"\n**{s['sweep']}** ({s['trials']} trials: {s['shape']}): {s['cpu_seconds_total'] / 60:.1f} CPU min; "
              f"on {s['workers']} workers with a core each about **{s['estimate_seconds'] / 60:.1f} min** "
              f"(longest trial {s['longest_trial_seconds'] / 60:.1f} min)")
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")
    raw = json.loads(json.dumps({"heads": list(results.values()), "sweeps": sweeps}, default=str))
    bench_results.record(raw=raw)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "classify/train.py",
    "classify/heads.py",
    "classify/data.py",
    "classify/weighting.py",
    "classify/model.py",
    "classify/sweep.py",
    "classify/frames.py",
    "classify/sources.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "epoch", MODULES))

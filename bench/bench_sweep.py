"""Benchmark: the shipped variants sweep (every weighting variant x head x the file's seeds) on a
feature store, its wall time, and the speed-up of 2 dask workers over 1.

    python bench/bench_sweep.py [--store /tmp/bench/offla19.zarr] [--config configs/sweeps/variants.toml]
                                [--out /tmp/bench/sweep] [--workers 2] [--speedup-set seed=0]
                                [--repeats 2] [--set 'seed=[0,1,2]' ...]

``--set`` overrides go to the full sweep only (as `pipeline sweep --set`); ``--repeats 0`` skips the
speed-up pairs.

Runs of `pipeline sweep`, each a fresh process into a fresh directory (nothing resumed):

1. the full sweep with ``--workers`` workers (the headline wall time);
2. ``--repeats`` pairs of runs of the subset of trials selected by ``--speedup-set`` (default:
   seed 0 of four variants: mean, qaf-static, latent, trainable-tables), with 2 workers, then
   with 1 worker; the speed-up is the ratio of their total wall times. Alternating the two
   spreads the load of other processes on a shared machine over both.

Prints a Markdown report: machine, commands, wall times, the ranking table of the full sweep
(as `pipeline sweep` printed it), and per-variant trial times. Logs go to OUT/*.log.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
import torch

from pipeline.cluster import threads_per_worker

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = "from pipeline.commands.sweep import command; command()"  # `pipeline sweep`, registered or not


def load() -> str:
    """The 1-minute load average: other processes on a shared machine slow every run."""
    return f"{os.getloadavg()[0]:.1f}"


def run_sweep(store: str, config: Path, out: Path, workers: int, extra: list[str]) -> tuple[float, str]:
    """Run `pipeline sweep` into a fresh ``out``; return (wall seconds, stdout). Exits on failure."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["--features", store, "--config", str(config), "--out", str(out), "--workers", str(workers), *extra]
    log = out.with_suffix(".log")
    print(f"running: pipeline sweep {' '.join(args)} (load {load()})", file=sys.stderr)
    started = time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run([sys.executable, "-c", LAUNCH, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                              text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"pipeline sweep failed (exit {done.returncode}); see {log}\n{done.stdout}")
    return seconds, done.stdout


def ranking_lines(stdout: str) -> str:
    """The Markdown ranking table that `pipeline sweep` prints."""
    return "\n".join(line for line in stdout.splitlines() if line.startswith("|"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/bench/offla19.zarr")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "sweeps" / "variants.toml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench/sweep"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--speedup-set", action="append", default=None,
                        help="--set of the 1-vs-2-worker subset (repeatable; default seed=0 and four variants)")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of subset runs (2 workers, then 1); 0: none")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a `pipeline sweep --set` for the full sweep (repeatable), e.g. 'seed=[0,1,2]'")
    args = parser.parse_args()
    pairs = args.speedup_set or ["seed=0", 'variant=["mean","qaf-static","latent","trainable-tables"]']
    subset = [item for pair in pairs for item in ("--set", pair)]
    args.out.mkdir(parents=True, exist_ok=True)

    loads = [load()]
    full_seconds, full_stdout = run_sweep(args.store, args.config, args.out / "full", args.workers,
                                          [item for pair in args.overrides for item in ("--set", pair)])
    bench_results.record(codec_weights=Path(args.store) / "codec_weights.th", full_sweep_s=round(full_seconds, 1))
    loads.append(load())
    timings: list[tuple[int, float, str, str]] = []  # (workers, seconds, load before, load after)
    for repeat in range(args.repeats):
        for workers in (2, 1):
            before = load()
            seconds, _ = run_sweep(args.store, args.config, args.out / f"subset_w{workers}_{repeat}", workers, subset)
            timings.append((workers, seconds, before, load()))

    results = pd.read_parquet(args.out / "full" / "results.parquet")
    n_subset = len(pd.read_parquet(args.out / "subset_w1_0" / "results.parquet")) if args.repeats else 0
    per_variant = results.groupby("variant", sort=False).agg(
        trials=("trial_id", "size"), wall_s=("wall_seconds", "mean"), train_s=("train_seconds", "mean"),
        epochs=("epochs_run", "mean"), params=("n_trainable", "first"))

    print(f"## Sweep benchmark: {args.config.relative_to(ROOT)} on {args.store}\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, torch {torch.__version__}, no GPU\n")
    print(f"Codec weights: {results['codec_weights_label'].iloc[0]}\n")
    print("| run | trials | workers | torch threads / worker | wall time | load avg before / after |")
    print("|---|---|---|---|---|---|")
    threads = results["torch_threads"].iloc[0]
    print(f"| full sweep | {len(results)} | {args.workers} | {threads} | {full_seconds:.0f} s "
          f"({full_seconds / 60:.1f} min) | {loads[0]} / {loads[1]} |")
    for workers, seconds, before, after in timings:
        print(f"| subset `{' '.join(subset)}` | {n_subset} | {workers} | {threads_per_worker(workers)} | "
              f"{seconds:.0f} s | {before} / {after} |")
    total = {w: sum(t[1] for t in timings if t[0] == w) for w in (1, 2)}
    if args.repeats:
        print(f"\nSpeed-up of 2 workers over 1 on the subset (total over {args.repeats} pair(s)): "
              f"{total[1] / total[2]:.2f}x\n")
    print(f"Failed trials in the full sweep: {int((results['status'] != 'ok').sum())}\n")
    print("### Ranking of the full sweep (as printed by `pipeline sweep`)\n")
    print(ranking_lines(full_stdout) + "\n")
    print("### Mean time per trial, by variant (full sweep)\n")
    print("| variant | trials | wall s / trial | train s / trial | epochs | trainable params |")
    print("|---|---|---|---|---|---|")
    for variant, r in per_variant.iterrows():
        print(f"| {variant} | {r.trials} | {r.wall_s:.1f} | {r.train_s:.1f} | {r.epochs:.1f} | {int(r.params):,} |")


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "classify/sweep.py",
    "classify/train.py",
    "classify/heads.py",
    "classify/data.py",
    "classify/weighting.py",
    "classify/model.py",
    "classify/report.py",
    "classify/bootstrap.py",
    "extract/codec.py",
    "extract/lsuv.py",
    "extract/run.py",
    "extract/encoder.py",
    "pipeline/cluster.py",
    "pipeline/commands/sweep.py",
    "extract/calibration.py",
    "extract/driver.py",
    "extract/codec_stream.py",
    "classify/rebuild.py",
    "classify/frames.py",
    "classify/sources.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "sweep", MODULES))

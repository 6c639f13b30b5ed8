"""Planted-signal benchmark: do the learned hierarchy weights find where the label is, within the
shipped sweep's training budget? And why did they not before (the diagnosis behind ``weights_lr``)?

    PYTHONPATH=. python bench/bench_planted.py --out /tmp/learn-work/planted [--workers 2]
        [--sweep configs/sweeps/variants.toml] [--seeds 0 1] [--single-head 1] [--json FILE]

Stores (`classify.planted`, the effect sized once from first principles in its docstring: the
planted level alone separates the classes with d' = 5 on 1 s, EER 0.6 %; `mean` dilutes it to
d' = 5 / sqrt(8)), all with the real codec's shape (8 levels, 1,024 codes, 128 dims), offla19's
split sizes (1,199 / 598 / 996) and 1 to 2 s utterances, SYNTHETIC codebooks:

* ``k1``, ``k4``, ``k8``: the label in level k's code distribution only (all dims);
* ``two``: split over level 2 (dims 0-63) and level 6 (dims 64-127), d' 5 / sqrt(2) each, where
  QAF-Static's per-dimension weights can pick each level in its own dims and one scalar per level
  cannot (theory: EER 0.6 % against 3.8 % at 1 s for ideal linear read-outs).

Training: the sweep file's [base] and its ``head`` axis (the shipped sweep's budget and heads), through
`classify.sweep` (``run_trial``: train, choose the epoch on dev, score dev and eval). Per store:
scalar, qaf-static and mean x every head x ``--seeds``; single:j for j in ``--singles`` (default
1..8) with the head number ``--single-head`` of that axis (default 1: the stats head, the cheap
one), seed 0.
Trials run in ``--workers`` processes with one torch thread each; results are resumable
(``OUT/<store>/results.parquet``), and each store gets the sweep report (``report.md``).

Diagnosis (in this process, one thread, store k4, scalar weighting, first head): an instrumented run
at weights_lr = lr (as before weights_lr existed), the same without level_norm, the same with
tau = lr / (default weights_lr), and the default weights_lr. Per run: the mean |gradient| of the
logits and of the head's parameters, the logits' step per step divided by that step's learning rate
(Adam's normalised step), how far level 4's logit travelled against the sum of the learning rates,
and the final weight ratio of level 4 to the largest other.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)
import torch

from classify.config import TrainConfig
from classify.planted import Plant, PlantedSpec, make_planted, write_planted_store
from classify.report import ReportContext, write_report
from classify.report_stats import split_summaries
from classify.sweep import SweepSpec, TrialTask, expand, load_sweep, read_results, run_sweep, run_trial, store_identity
from classify.train import TrainingRun, lr_at
from store.reader import FeatureStore

D_PRIME = 5.0
STORES = {
    "k1": (Plant(1, D_PRIME),),
    "k4": (Plant(4, D_PRIME),),
    "k8": (Plant(8, D_PRIME),),
    "two": (Plant(2, D_PRIME / math.sqrt(2), (0, 64)), Plant(6, D_PRIME / math.sqrt(2), (64, 128))),
}


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def make_store(out: Path, name: str) -> FeatureStore:
    path = out / f"{name}.zarr"
    if not (path / "zarr.json").exists():
        write_planted_store(str(path), make_planted(PlantedSpec(plants=STORES[name])))
    return FeatureStore(str(path))


def _process_executor(workers: int):
    def execute(tasks: list[TrialTask]):
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(run_trial, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()
    return execute


def run_store(out: Path, name: str, sweep: SweepSpec, seeds: list[int], workers: int, single_head: int,
              singles: list[int]) -> pd.DataFrame:
    store = make_store(out, name)
    heads = sweep.grid.get("head", [sweep.base.get("head", "lstm")])
    single = heads[single_head : single_head + 1]
    levels = sorted({p.level for p in STORES[name]})
    specs = [SweepSpec(f"{name}-main", sweep.base, {"variant": ["scalar", "qaf-static", "mean"], "head": heads,
                                                    "seed": seeds}),
             SweepSpec(f"{name}-single", sweep.base, {"variant": [f"single:{j}" for j in singles],
                                                      "head": single, "seed": [0]})]
    if name == "two":  # the single levels that carry a part of the signal, and two that carry none
        specs[1] = SweepSpec(f"{name}-single", sweep.base, {"variant": [f"single:{j}" for j in (*levels, 1, 8)],
                                                            "head": single, "seed": [0]})
    trials = [t for spec in specs for t in expand(spec, store_identity(store))]
    run_sweep(trials, store.url, out / name, "eval", _process_executor(workers), threads=1)
    results = read_results(out / name)
    results = results[results["trial_id"].isin({t.trial_id for t in trials})]
    context = ReportContext(f"bench_planted:{name}", store.url, "planted", store.attrs["dataset"]["description"], "eval",
                            sweep.base, {"variant": ["scalar", "qaf-static", "mean", "single:j"], "head": heads,
                                         "seed": seeds},
                            split_summaries(store, ["train", "dev", "eval"]), utterances=store.utterances)
    write_report(results, out / name, context)
    return results


def per_level(weights: str) -> np.ndarray | None:
    if not weights:
        return None
    alpha = np.asarray(json.loads(weights), dtype=np.float64)
    return alpha.mean(axis=1) if alpha.ndim == 2 else alpha


def head_label(row: pd.Series) -> str:
    kwargs = json.loads(row["head_kwargs"]) if isinstance(row["head_kwargs"], str) else row["head_kwargs"]
    if row["head"] == "lstm" and kwargs:
        return f"lstm {kwargs.get('proj_dim')}/{kwargs.get('hidden_dim')}"
    return str(row["head"]) + (" per level" if kwargs.get("per_level") else "")


def table_main(name: str, results: pd.DataFrame) -> str:
    """Per head and variant: dev and eval EER (mean over seeds), weights per level, dominance."""
    levels = sorted({p.level for p in STORES[name]})
    ok = results[results["status"] == "ok"].copy()
    ok["head_label"] = ok.apply(head_label, axis=1)
    lines = ["| head | variant | seeds | dev EER % (mean, per seed) | eval EER % (mean) | " +
             " | ".join(f"L{q}" for q in range(1, 9)) + " | planted / largest other |", "|" + "---|" * 14]
    for (head, variant), group in ok[~ok["variant"].str.startswith("single")].groupby(["head_label", "variant"],
                                                                                       sort=False):
        weights = np.mean([per_level(w) for w in group["level_weights"]], axis=0)
        others = np.delete(weights, [q - 1 for q in levels])
        planted = weights[[q - 1 for q in levels]]
        dom = "–" if variant == "mean" else " / ".join(f"{w / others.max():.1f}x" for w in planted)
        per_seed = ", ".join(f"{100 * e:.1f}" for e in group["dev_eer"])
        lines.append(f"| {head} | {variant} | {len(group)} | {100 * group['dev_eer'].mean():.2f} ({per_seed}) | "
                     f"{100 * group['eval_eer'].mean():.2f} | " + " | ".join(f"{w:.3f}" for w in weights) +
                     f" | {dom} |")
    return "\n".join(lines)


def table_single(results: pd.DataFrame) -> str:
    ok = results[(results["status"] == "ok") & results["variant"].str.startswith("single")]
    ok = ok.assign(j=ok["variant"].str.split(":").str[1].astype(int)).sort_values("j")
    return ("| j | " + " | ".join(str(j) for j in ok["j"]) + " |\n|" + "---|" * (len(ok) + 1) + "\n" +
            "| dev EER % | " + " | ".join(f"{100 * e:.1f}" for e in ok["dev_eer"]) + " |\n" +
            "| eval EER % | " + " | ".join(f"{100 * e:.1f}" for e in ok["eval_eer"]) + " |")


def qaf_dims(results: pd.DataFrame) -> str:
    """Two-level store: QAF-Static's mean weight of levels 2 and 6 in each half of the dims."""
    rows = results[(results["status"] == "ok") & (results["variant"] == "qaf-static")]
    out = []
    for _, row in rows.iterrows():
        alpha = np.asarray(json.loads(row["level_weights"]))
        out.append(f"{head_label(row)}, seed {row['seed']}: level 2 {alpha[1, :64].mean():.3f} in dims 0-63 vs "
                   f"{alpha[1, 64:].mean():.3f} in 64-127; level 6 {alpha[5, :64].mean():.3f} vs "
                   f"{alpha[5, 64:].mean():.3f}")
    return "\n".join(f"* {line}" for line in out)


def diagnose(out: Path, sweep: SweepSpec) -> list[dict[str, Any]]:
    """Instrumented runs on store k4 (scalar weighting, first head of the sweep)."""
    torch.set_num_threads(1)
    store = make_store(out, "k4")
    heads = sweep.grid.get("head", [sweep.base.get("head", "lstm")])
    head = heads[0] if isinstance(heads[0], dict) else {"head": heads[0]}
    base = {**sweep.base, **head, "variant": "scalar", "device": "cpu", "seed": 0}
    lr = float(base.get("lr", TrainConfig().lr))
    default = TrainConfig().weights_lr
    runs = [("weights_lr = lr (before)", {"weights_lr": lr}),
            ("weights_lr = lr, level_norm off", {"weights_lr": lr, "level_norm": False}),
            (f"weights_lr = lr, tau = lr / {default:g}", {"weights_lr": lr, "tau": lr / default}),
            (f"weights_lr = {default:g} (default)", {})]
    rows = []
    for label, change in runs:
        config = TrainConfig(**{**base, **change})
        run = TrainingRun(config, store, out / "diagnosis", lambda _: None)
        weights = run.model.weighting.weights
        head_params = [p for p in run.model.head.parameters()]
        logit_grads, head_grads, level_grads, norm_steps, rates = [], [], [], [], []
        optimizer_step = run.optimizer.step

        def step(*args, **kwargs):
            before = weights.detach().clone()
            logit_grads.append(float(weights.grad.abs().mean()))
            level_grads.append(weights.grad.detach().abs().clone())
            head_grads.append(float(torch.cat([p.grad.abs().flatten() for p in head_params]).mean()))
            rate = run.optimizer.param_groups[1]["lr"]
            result = optimizer_step(*args, **kwargs)
            norm_steps.append(float(((weights.detach() - before).abs() / rate).mean()))
            rates.append(rate)
            return result

        run.optimizer.step = step
        start = weights.detach().clone()
        cpu = time.process_time()
        for epoch in range(1, config.epochs + 1):
            run.run_epoch(epoch)
        dev_eer, _ = run.dev_metrics()
        travel = (weights.detach() - start).abs()
        alpha = run.model.weighting.level_weights().numpy()
        level = torch.stack(level_grads).mean(0).numpy()
        rows.append({
            "run": label, "weights_lr": config.weights_lr, "tau": config.tau, "level_norm": config.level_norm,
            "steps": len(rates), "logit_grad": float(np.mean(logit_grads)), "head_grad": float(np.mean(head_grads)),
            "level_grad_1": float(level[0]), "level_grad_8": float(level[7]),
            "normalised_step": float(np.median(norm_steps)), "sum_lr": float(np.sum(rates)),
            "travel_level4": float(travel[3]), "travel_max": float(travel.max()),
            "ratio": float(alpha[3] / np.delete(alpha, 3).max()), "alpha": [round(float(a), 3) for a in alpha],
            "dev_eer": dev_eer, "cpu_seconds": time.process_time() - cpu,
            "schedule_check": float(sum(lr_at(s, run.total_steps, run.warmup, config.weights_lr)
                                        for s in range(run.total_steps))),
        })
    return rows


def heads_label(sweep: SweepSpec, index: int) -> str:
    heads = sweep.grid.get("head", [sweep.base.get("head", "lstm")])
    head = heads[index] if isinstance(heads[index], dict) else {"head": heads[index]}
    return f"head {head['head']}"


def table_diagnosis(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | steps | mean abs grad, logits | mean abs grad, head | logits grad L1 / L8 | Adam step / lr "
             "(median) | level 4 logit travel | sum of lr | weight ratio L4 / largest other | dev EER % |",
             "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['run']} | {r['steps']} | {r['logit_grad']:.2e} | {r['head_grad']:.2e} | "
                     f"{r['level_grad_1']:.1e} / {r['level_grad_8']:.1e} | {r['normalised_step']:.2f} | "
                     f"{r['travel_level4']:.3f} | {r['sum_lr']:.3f} | {r['ratio']:.2f} | {100 * r['dev_eer']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sweep", default="configs/sweeps/variants.toml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--single-head", type=int, default=1)
    parser.add_argument("--singles", type=int, nargs="*", default=list(range(1, 9)),
                        help="levels j of the single:j runs (store `two`: its two planted levels, 1 and 8)")
    parser.add_argument("--stores", nargs="*", default=list(STORES))
    parser.add_argument("--no-diagnosis", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sweep = load_sweep(args.sweep)
    started, load_start = time.perf_counter(), loadavg()
    print(f"# Planted-signal benchmark\n\nCommand: `PYTHONPATH=. python bench/bench_planted.py --out {args.out} "
          f"--workers {args.workers} --sweep {args.sweep} --seeds {' '.join(map(str, args.seeds))} --single-head "
          f"{args.single_head} --singles {' '.join(map(str, args.singles))}"
          f"{' --no-diagnosis' if args.no_diagnosis else ''}"
          f"{' --stores ' + ' '.join(args.stores) if args.stores != list(STORES) else ''}`\n")
    print(f"Python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} cores, {args.workers} "
          f"worker processes with 1 torch thread each; load average at start {load_start}\n")
    print(f"Training budget: the [base] of `{args.sweep}`: {sweep.base}; heads {sweep.grid.get('head')}; "
          f"TrainConfig defaults otherwise (weights_lr {TrainConfig().weights_lr:g}, tau {TrainConfig().tau:g}, "
          "level_norm on).\n")
    print("**Codec weights: SYNTHETIC planted-signal codebooks (random, not a codec).** These stores test whether "
          "the learning machinery finds a planted signal; they say nothing about EnCodec.\n")
    record: dict[str, Any] = {"stores": {}}
    if not args.no_diagnosis:
        rows = diagnose(args.out, sweep)
        record["diagnosis"] = rows
        print("## Why the weights did not move: instrumented runs (store k4, scalar)\n")
        print(table_diagnosis(rows) + "\n")
        for r in rows:
            print(f"* {r['run']}: alpha {r['alpha']} ({r['cpu_seconds']:.0f} CPU s)")
        print()
    for name in args.stores:
        t0 = time.perf_counter()
        results = run_store(args.out, name, sweep, args.seeds, args.workers, args.single_head, args.singles)
        record["stores"][name] = results.drop(columns=["provenance_json"], errors="ignore").to_dict("records")
        print(f"## Store `{name}`: {FeatureStore(str(args.out / (name + '.zarr'))).attrs['dataset']['description']}\n")
        print(table_main(name, results) + "\n")
        print(f"single:j ({heads_label(sweep, args.single_head)}, seed 0):\n\n" + table_single(results) + "\n")
        if name == "two":
            print("QAF-Static per dimension:\n\n" + qaf_dims(results) + "\n")
        print(f"({len(results)} trials, {time.perf_counter() - t0:.0f} s wall; report: {args.out / name / 'report.md'})\n")
    print(f"Total wall time {time.perf_counter() - started:.0f} s; load average at the end {loadavg()}")
    bench_results.record(raw=json.loads(json.dumps(record, default=str)))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, default=str))


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "classify/planted.py",
    "classify/train.py",
    "classify/heads.py",
    "classify/data.py",
    "classify/weighting.py",
    "classify/model.py",
    "classify/sweep.py",
    "classify/report.py",
    "classify/frames.py",
    "classify/sources.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "planted", MODULES))

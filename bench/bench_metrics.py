"""Benchmark: vectorised EER / minDCF (classify.metrics) against plain Python loops that follow
the official ASVspoof definitions, on many trials with heavy ties; plus the cross-check against
the official package's values on real ASVspoof5 scores (shared/data/scores_asv5), when present.

    python bench/bench_metrics.py [--n 1000000] [--seed 0]

The loop reference is independent of numpy's argsort: Python's stable ``sorted`` orders the
concatenation [bona fide, spoof] (so tied bona fide trials come first, as the official mergesort
does), a loop walks it to build the DET points, and two more loops pick the EER point
(first minimum of |frr - far|) and the minimum DCF (the official compute_mindcf loop, strict '<').
Prints a markdown report; exits non-zero if any value differs by more than 1e-9.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)

from classify.metrics import (
    compute_det_curve,
    compute_eer,
    compute_mindcf,
    metrics_table,
    mindcf_from_det,  # the vectorised pick alone, to time it
)

TOLERANCE = 1e-9
SCORES_ASV5 = Path(__file__).resolve().parents[1].parent / "shared/data/scores_asv5"


def loop_det(bona: list[float], spoof: list[float]) -> tuple[list[float], list[float], list[float]]:
    """Official DET points from a stable Python sort and a running count."""
    trials = sorted([(s, True) for s in bona] + [(s, False) for s in spoof], key=itemgetter(0))
    n_bona, n_spoof = len(bona), len(spoof)
    frr, far, thr = [0.0], [1.0], [trials[0][0] - 0.001]
    bona_rejected = spoof_rejected = 0
    for score, is_bona in trials:
        if is_bona:
            bona_rejected += 1
        else:
            spoof_rejected += 1
        frr.append(bona_rejected / n_bona)
        far.append((n_spoof - spoof_rejected) / n_spoof)
        thr.append(score)
    return frr, far, thr


def loop_eer(frr: list[float], far: list[float], thr: list[float]) -> tuple[float, float]:
    """First DET point with the smallest |frr - far|: (mean of the two, threshold)."""
    best, best_i = math.inf, 0
    for i in range(len(frr)):
        gap = abs(frr[i] - far[i])
        if gap < best:
            best, best_i = gap, i
    return (frr[best_i] + far[best_i]) / 2, thr[best_i]


def loop_mindcf(
    frr: list[float], far: list[float], thr: list[float], p_spoof: float = 0.05, c_miss: float = 1, c_fa: float = 10
) -> tuple[float, float]:
    """The official compute_mindcf loop."""
    p_target = 1 - p_spoof
    min_c, min_t = math.inf, thr[0]
    for i in range(len(frr)):
        c = c_miss * frr[i] * p_target + c_fa * far[i] * (1 - p_target)
        if c < min_c:
            min_c, min_t = c, thr[i]
    return min_c / min(c_miss * p_target, c_fa * (1 - p_target)), min_t


def timed(func: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """(result, best wall time in seconds over ``repeat`` runs)."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return result, best


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo where there is one, else the platform's machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n trials, 20 % bona fide N(1.5, 1), 80 % spoof N(-1.5, 1.2), rounded to 0.01 (heavy ties)."""
    rng = np.random.default_rng(seed)
    n_bona = n // 5
    bona = np.round(rng.normal(1.5, 1.0, n_bona), 2)
    spoof = np.round(rng.normal(-1.5, 1.2, n - n_bona), 2)
    return bona, spoof


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--asv5", type=Path, default=SCORES_ASV5,
                        help="the scores_asv5 folder for the cross-check (default: %(default)s; a git worktree elsewhere: give it)")
    args = parser.parse_args()

    bona, spoof = synthetic(args.n, args.seed)
    n_distinct = np.unique(np.concatenate((bona, spoof))).size
    failures: list[str] = []

    (eer, eer_t), t_eer = timed(lambda: compute_eer(bona, spoof), repeat=3)
    (min_dcf, dcf_t), t_dcf = timed(lambda: compute_mindcf(bona, spoof), repeat=3)
    _, t_det = timed(lambda: compute_det_curve(bona, spoof), repeat=3)
    _, t_table = timed(lambda: metrics_table(np.concatenate((bona, spoof)), np.arange(args.n) < bona.size), repeat=3)

    bona_list, spoof_list = bona.tolist(), spoof.tolist()
    (frr, far, thr), t_loop_det = timed(lambda: loop_det(bona_list, spoof_list))
    (ref_eer, ref_eer_t), t_loop_eer = timed(lambda: loop_eer(frr, far, thr))
    (ref_dcf, ref_dcf_t), t_loop_dcf = timed(lambda: loop_mindcf(frr, far, thr))
    # The official code runs the same loop over the numpy arrays of its DET curve (slower: numpy
    # scalar arithmetic); time that too, on numpy's DET, as the package user would see it.
    np_det = compute_det_curve(bona, spoof)
    (official_dcf, official_dcf_t), t_official_dcf = timed(lambda: loop_mindcf(*np_det))
    _, t_pick = timed(lambda: mindcf_from_det(*np_det, 0.05, 1, 10), repeat=3)

    checks = {
        "EER": (eer, ref_eer),
        "EER threshold": (eer_t, ref_eer_t),
        "minDCF": (min_dcf, ref_dcf),
        "minDCF threshold": (dcf_t, ref_dcf_t),
        "minDCF, official loop on numpy DET": (min_dcf, official_dcf),
        "its threshold": (dcf_t, official_dcf_t),
    }
    print(f"## Metrics benchmark: {args.n:,} trials ({bona.size:,} bona fide, {spoof.size:,} spoof), "
          f"{n_distinct:,} distinct scores (rounded to 0.01: heavy ties), seed {args.seed}\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}\n")
    print("| value | vectorised | loop reference | abs. difference |")
    print("|---|---|---|---|")
    for name, (ours, ref) in checks.items():
        diff = abs(ours - ref)
        print(f"| {name} | {ours:.15g} | {ref:.15g} | {diff:.1e} |")
        if diff > TOLERANCE:
            failures.append(f"{name}: {ours!r} != {ref!r}")
    print()
    print("| step | vectorised (best of 3) | Python loop (1 run) | speed-up |")
    print("|---|---|---|---|")
    print(f"| DET curve | {t_det:.3f} s | {t_loop_det:.3f} s (stable sort + walk) | {t_loop_det / t_det:.0f}x |")
    print(f"| EER (DET + pick) | {t_eer:.3f} s | {t_loop_det + t_loop_eer:.3f} s "
          f"(DET + {t_loop_eer:.3f} s loop) | {(t_loop_det + t_loop_eer) / t_eer:.0f}x |")
    print(f"| minDCF (DET + pick) | {t_dcf:.3f} s | {t_loop_det + t_loop_dcf:.3f} s "
          f"(DET + {t_loop_dcf:.3f} s official loop, over lists) | {(t_loop_det + t_loop_dcf) / t_dcf:.0f}x |")
    print(f"| minDCF pick only, on a given DET | {t_pick:.4f} s | {t_official_dcf:.3f} s "
          f"(official loop over numpy arrays) | {t_official_dcf / t_pick:.0f}x |")
    print(f"| metrics_table: EER, minDCF, actDCF, Cllr | {t_table:.3f} s | - | - |")
    print()

    if args.asv5.is_dir():
        expected = json.loads((args.asv5 / "expected_metrics.json").read_text())["cm_score"]
        with (args.asv5 / "dev_scores_label.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        scores = np.array([float(r["cm_score"]) for r in rows])
        is_bona = np.isin([float(r["sasv_label"]) for r in rows], expected["bonafide_labels"])
        table = metrics_table(scores, is_bona)
        print(f"### Cross-check: scores_asv5 ({len(rows):,} ASVspoof5 dev trials) vs the official package\n")
        print("| metric | this package | official (expected_metrics.json) | abs. difference |")
        print("|---|---|---|---|")
        for key in ("eer", "min_dcf", "act_dcf", "cllr"):
            diff = abs(table[key] - expected[key])
            print(f"| {key} | {table[key]:.15g} | {expected[key]:.15g} | {diff:.1e} |")
            if diff > TOLERANCE:
                failures.append(f"scores_asv5 {key}: {table[key]!r} != {expected[key]!r}")
    else:
        print(f"(scores_asv5 cross-check skipped: {args.asv5} not found)")
    print()
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print(f"All values agree to {TOLERANCE:g}.")
    return 0


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "classify/metrics.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "metrics", MODULES))

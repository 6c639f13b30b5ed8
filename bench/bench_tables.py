"""Benchmark: the official cross-corpus tables at ASVspoof 2021 DF's size.

    python bench/bench_tables.py [--n 611829] [--threads 2] [--seed 0] [--result tables]

A synthetic DF key of ``--n`` trials (DF's 22,617 bona fide and 589,212 spoof at the default size;
phases progress / eval / hidden 10 / 75 / 15 %, the 5 vocoder types, the 9 compression conditions,
scores with ties: rounded to 1e-3) is scored by a noisy detector. Timed, with BLAS/OpenMP limited to
``--threads``: what `evaluate` computes on such a store after scoring: the pooled metrics of the eval
phase (`classify.metrics.metrics_table` with per attack and per codec) and the per-phase tables
(`classify.tables.corpus_tables`: vocoder x compression, 6 x 10 cells, three phases); also a LA-size
table (181,566 trials, 14 x 8 cells) with the min t-DCF from 30,000 synthetic ASV trials. The
pooled cell is checked against `classify.metrics.compute_eer`. The result: `bench/results.py` (``tables``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import results as bench_results  # bench/results.py: the one stamp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODULES = ["classify/tables.py", "classify/metrics.py"]


def _limit_threads(n: int) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[name] = str(n)


def df_key(n: int, seed: int):
    import numpy as np
    import pandas as pd

    from classify.tables import DF_VOCODERS

    rng = np.random.default_rng(seed)
    n_bona = round(n * 22_617 / 611_829)
    label = np.array(["spoof"] * n, dtype=object)
    label[rng.choice(n, n_bona, replace=False)] = "bonafide"
    is_bona = label == "bonafide"
    vocoder = np.where(is_bona, "bonafide", np.array(DF_VOCODERS, dtype=object)[rng.integers(0, 5, n)])
    condition = np.array([f"C{k}" for k in range(1, 10)], dtype=object)[rng.integers(0, 9, n)]
    phase = np.array(["progress", "eval", "hidden"], dtype=object)[rng.choice(3, n, p=[0.10, 0.75, 0.15])]
    score = np.round(rng.normal(size=n) + 1.5 * is_bona - 0.1 * rng.integers(0, 9, n), 3)
    return pd.DataFrame({"utt_id": [f"DF_E_{k:07d}" for k in range(n)], "score": score, "label": label,
                         "system": np.where(is_bona, "bonafide", "A" + pd.Series(rng.integers(7, 20, n)).astype(str)),
                         "codec": condition, "vocoder": vocoder, "condition": condition, "phase": phase})


def la_key(n: int, n_asv: int, seed: int):
    import numpy as np
    import pandas as pd

    from classify.tables import LA_ATTACKS, AsvTrials

    rng = np.random.default_rng(seed + 1)
    is_bona = rng.random(n) < 0.1
    attack = np.where(is_bona, "bonafide", np.array(LA_ATTACKS, dtype=object)[rng.integers(0, 13, n)])
    frame = pd.DataFrame({"score": np.round(rng.normal(size=n) + 2 * is_bona, 3),
                          "label": np.where(is_bona, "bonafide", "spoof"), "system": attack,
                          "condition": np.array([f"C{k}" for k in range(1, 8)])[rng.integers(0, 7, n)],
                          "phase": "eval"})
    kind = rng.choice(np.array(["target", "nontarget", "spoof"]), n_asv, p=[0.3, 0.2, 0.5])
    asv = pd.DataFrame({"score": rng.normal(size=n_asv) + 3 * (kind == "target") + 1.5 * (kind == "spoof"),
                        "label": kind, "system": np.where(kind == "spoof", rng.choice(LA_ATTACKS, n_asv), "bonafide"),
                        "condition": np.array([f"C{k}" for k in range(1, 8)])[rng.integers(0, 7, n_asv)],
                        "phase": "eval"})
    return frame, AsvTrials(asv, "synthetic ASV trials")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=611_829)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _limit_threads(args.threads)
    import numpy as np

    from classify.metrics import compute_eer, metrics_table
    from classify.tables import corpus_tables

    frame = df_key(args.n, args.seed)
    la, asv = la_key(181_566, 30_000, args.seed)
    timings: dict[str, list[float]] = {"df_metrics_eval_pooled": [], "df_tables_3_phases": [], "df_total": [],
                                       "la_tables_with_tdcf": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        eval_part = frame[frame["phase"] == "eval"]
        pooled = metrics_table(eval_part["score"].to_numpy(), (eval_part["label"] == "bonafide").to_numpy(),
                               eval_part["system"].tolist(), eval_part["codec"].tolist())
        middle = time.perf_counter()
        tables = corpus_tables("asv21df", frame)
        end = time.perf_counter()
        la_tables = corpus_tables("asv21la", la, asv)
        la_end = time.perf_counter()
        timings["df_metrics_eval_pooled"].append(middle - start)
        timings["df_tables_3_phases"].append(end - middle)
        timings["df_total"].append(end - start)
        timings["la_tables_with_tdcf"].append(la_end - end)
    cell = tables["phases"]["eval"]["tables"]["vocoder x condition"]["eer"][-1][-1]
    bona = eval_part.loc[eval_part["label"] == "bonafide", "score"].to_numpy()
    spoof = eval_part.loc[eval_part["label"] == "spoof", "score"].to_numpy()
    assert cell == compute_eer(bona, spoof)[0] == pooled["eer"], "pooled cell differs from compute_eer"
    assert la_tables["phases"]["eval"]["tables"]["attack x condition"]["min_tdcf"][-1][-1] is not None
    figures = {
        "n_trials": args.n, "n_bonafide": int(len(frame[frame["label"] == "bonafide"])), "threads": args.threads,
        "repeats": args.repeats, "cells_df": 60 * 3, "cells_la": 14 * 8,
        **{f"{k}_seconds_best": round(min(v), 3) for k, v in timings.items()},
        **{f"{k}_seconds_median": round(float(np.median(v)), 3) for k, v in timings.items()},
        "target_seconds": 10.0, "within_target": min(timings["df_total"]) < 10.0,
        "pooled_eval_eer": cell,
    }
    bench_results.record(**figures)
    print(json.dumps(figures, indent=2))
    if not figures["within_target"]:
        print(f"target missed: DF total {figures['df_total_seconds_best']} s >= {figures['target_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "tables", MODULES))

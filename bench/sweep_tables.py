"""The tables of a finished sweep's own report (``OUT/report.md``: selection on dev with the eval
intervals, paired comparisons, learned weights) as a raw result, so BENCHMARKS.md renders them.

    python bench/sweep_tables.py --sweep OUT --store STORE [--result sweep_report]

Run it right after the sweep (`bench/bench_sweep.py` writes ``OUT/full``), at the same commit: the
tables are the report's, passed through `bench/results.py`'s markdown reader unchanged (keyed by the
heading above each table). The codec weights' sha256 is the store's (``STORE/codec_weights.th``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import results as bench_results  # noqa: E402  (bench/results.py)
from bench_sweep import MODULES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, type=Path, help="the sweep's output folder (holds report.md)")
    parser.add_argument("--store", required=True, type=Path, help="the store the sweep ran on")
    args = parser.parse_args()
    report = (args.sweep / "report.md").read_text()
    results = pd.read_parquet(args.sweep / "results.parquet")
    print(report)  # the Recorder keeps every printed table as figures.tables.HEADING
    bench_results.record(codec_weights=args.store / "codec_weights.th", sweep=str(args.sweep), trials=len(results), failed=int((results["status"] != "ok").sum()),
                         codec_weights_label=str(results["codec_weights_label"].iloc[0]))


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "sweep_report", MODULES))

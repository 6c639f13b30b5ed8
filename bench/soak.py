"""Run the soak loops (`pytest -m soak`: fault injection and load, minutes each) one by one and record
each one's command, duration and outcome as a raw result, for RELIABILITY.md's table.

    python bench/soak.py [--only SUBSTRING ...] [--result soak]

Each loop runs in its own ``python -m pytest -p no:cacheprovider -s -m soak -v NODE`` from the
repository root; its printed records (kills, runs, seconds) are kept (the tail of its output). A loop
that fails is recorded as failed with its output, never dropped; the script exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import results as bench_results  # noqa: E402  (bench/results.py)

LOOPS = [
    "tests/reliability/test_extract_kills.py::test_kill_loop",
    "tests/reliability/test_extract_kills.py::test_kill_loop_while_adding_a_stream",
    "tests/reliability/test_train_kills.py::test_train_kill_loop",
    "tests/reliability/test_train_kills.py::test_sweep_kill_loop_with_a_worker_killed_mid_trial",
    "tests/reliability/test_load.py::test_reads_of_finished_streams_while_two_workers_add_one",
    "tests/pipeline/test_score_cli.py::test_a_folder_of_1000_files_being_written",
]
MODULES = ["extract/driver.py", "extract/committer.py", "extract/unit.py", "store/writer.py", "store/format.py",
           "classify/train.py", "classify/sweep.py", "classify/checkpoint.py", "common/lease.py", "common/atomic.py",
           "pipeline/cluster.py", "pipeline/commands/score.py", "classify/detector.py",
           "tests/reliability/test_extract_kills.py", "tests/reliability/test_train_kills.py",
           "tests/reliability/test_load.py", "tests/pipeline/test_score_cli.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="run only the loops whose node id contains one of these")
    args = parser.parse_args()
    loops = [n for n in LOOPS if not args.only or any(s in n for s in args.only)]
    rows, raw, failed = [], {}, 0
    for node in loops:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-m", "soak", "-v", node]
        print(f"running {node}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        summary = next((line.strip("= ") for line in reversed(done.stdout.splitlines()) if " in " in line and "=" in line), "")
        outcome = "passed" if done.returncode == 0 else "FAILED"
        failed += done.returncode != 0
        rows.append([f"`{node.split('::', 1)[1]}`", outcome, f"{seconds:,.0f}", summary])
        raw[node] = {"command": "python -m pytest -p no:cacheprovider -s -m soak -v " + node, "returncode": done.returncode,
                     "seconds": round(seconds, 1), "summary": summary, "output_tail": done.stdout[-4000:]}
        print(f"{node}: {outcome} in {seconds:.0f} s ({summary})", file=sys.stderr, flush=True)
    print("### Soak loops\n")
    print("| loop | result | wall s | pytest summary |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    bench_results.record(loops=raw, failed=failed)
    FAILED.append(failed)
    return 0  # a failed loop is a result too: written, then the exit status says so


FAILED: list[int] = []

if __name__ == "__main__":
    status = bench_results.run(main, "soak", MODULES)
    sys.exit(status or int(bool(FAILED and FAILED[0])))

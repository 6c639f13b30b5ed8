"""Benchmark of SSL training I/O: system time and page faults of `pipeline train --variant ssl` reading an
SSL stream larger than ``ssl_kwargs.ram_mb`` (read per crop from the store), under ``/usr/bin/time -v``.

    python bench/bench_ssl_io.py --store /tmp/ssl.zarr --make [--epochs 2] [--layers 12 --hidden 1024]

``--make`` first writes a synthetic store there (`tests.synthetic`: 60 utterances a split of 150-330
codec frames, an SSL stream of ``--layers`` x ``--hidden`` float16, 611 MB at 12 x 1024) unless it
exists. The run: the paper's SSL settings (AttM over layers 1-12, proj_dim 512, no output norm,
level_norm false), ``ram_mb=0`` so that every crop is read from the store, ``--epochs`` epochs on the CPU.
Figures: user and system seconds, the system share of the CPU, minor page faults and peak RSS
(bench/results/ssl_io.json holds the before/after pair of the fix, measured by hand with the same command).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import results as bench_results  # noqa: E402  (bench/results.py)
from timed import parse_time_v  # noqa: E402  (bench/timed.py: the one GNU time -v parser)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_store(path: str, layers: int, hidden: int) -> None:
    from tests.synthetic import add_ssl_stream, synthetic_store

    synthetic_store(path, n_per_split=60, frames=(150, 330))
    add_ssl_stream(path, layers=layers, hidden=hidden)


def timed_train(store: str, epochs: int, layers: int) -> dict:
    out = tempfile.mkdtemp(prefix="bench_ssl_io_")
    try:
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "pipeline", "train", "--features", store, "--out", out,
                   "--variant", "ssl", "--epochs", str(epochs), "--device", "cpu", "--set", "level_norm=false",
                   "--set", f'ssl_kwargs={{layers="1-{layers}", proj_dim=512, norm=false, ram_mb=0}}']
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        if done.returncode:
            raise SystemExit(f"train failed: {done.stderr[-2000:]}")
        tv = parse_time_v(done.stderr)
        return {"user_s": tv["user_s"], "system_s": tv["system_s"], "system_pct": round(100 * tv["system_share"], 1),
                "minor_faults": int(tv["minor_faults"]), "peak_rss_mb": round(tv["max_rss_kb"] / 1024)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--make", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()
    if args.make and not Path(args.store).exists():
        make_store(args.store, args.layers, args.hidden)
    run = timed_train(args.store, args.epochs, args.layers)
    print("| user s | system s | system share of CPU | minor faults | peak RSS MB |\n|---|---|---|---|---|")
    print(f"| {run['user_s']:.1f} | {run['system_s']:.1f} | {run['system_pct']} % | {run['minor_faults']:,} | {run['peak_rss_mb']:,} |")
    bench_results.record(run=run, system_pct=run["system_pct"])
    return 0


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "ssl_io_run", ["classify/frames.py", "classify/sources.py", "common/malloc.py"]))

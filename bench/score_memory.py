"""Peak memory and wall time of the Detector API on a folder of files at one ``batch_seconds``: the
companion of `bench/bench_score.py` for allocator experiments (run it under different ``MALLOC_*``
environment variables; `common.malloc` leaves glibc alone when any is set).

    MALLOC_ARENA_MAX=1 python bench/score_memory.py --model RUN --folder DIR --batch-seconds 8 [--threads 2]

Prints: batch_seconds, the MALLOC_* variables set, files, wall seconds of ``score_files``, and the
process's peak resident memory (``ru_maxrss``) in MiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--batch-seconds", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch

    from classify.detector import Detector
    from extract.frontend import AUDIO_EXTENSIONS

    torch.set_num_threads(args.threads)
    files = sorted(str(p) for p in Path(args.folder).iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    detector = Detector.load(args.model, batch_seconds=args.batch_seconds)
    started = time.perf_counter()
    detector.score_files(files)
    wall = time.perf_counter() - started
    malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")) or "(none)"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"batch_seconds {args.batch_seconds:g}; {malloc}; {len(files)} files; {wall:.1f} s; peak RSS {peak:,.0f} MiB")
    bench_results.record(batch_seconds=args.batch_seconds, malloc=malloc, files=len(files), wall_s=round(wall, 2), peak_rss_mib=round(peak))


# The code whose figures this benchmark measures: the scoring path, as bench_score.py declares it
from bench_score import MODULES  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "score_memory", MODULES))

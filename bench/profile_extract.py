"""Where `pipeline extract` spends its time: the whole command under py-spy (every process, dask
workers included), samples sorted into stages.

    python bench/profile_extract.py --out /tmp/prof.txt -- --dataset asv19 --root ../shared/data/offla19 \
        --out /tmp/prof.zarr --weights W.th [--workers 1 ...]
    python bench/profile_extract.py --raw /tmp/prof.txt          # re-read a recorded profile

Needs py-spy (not a dependency of the project: ``pip install py-spy``, or
``pip install --target DIR py-spy`` and ``--py-spy DIR/bin/py-spy``). py-spy samples each
thread's Python stack (the C/C++ time below a Python call counts for that call) and leaves out
threads it sees idle; the stacks of threads waiting in a queue, a lock, a select or a sleep are
left out here too. Each remaining sample is given to the first stage (from the innermost frame
outwards) whose pattern its frames match. Shares are of the busy samples of all processes: with
2 cores busy, 50 % of the samples is one core.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STAGES = [  # (stage, pattern searched in one frame "function (file:line)"), innermost frame first
    ("encoder: convolutions", r"^Conv1d\._conv_forward"),
    ("encoder: LSTM", r"^LSTM\.forward"),
    ("encoder: padding (pad1d)", r"^pad1d "),
    ("encoder: reflection hook", r"^BatchEncoder\._reflect_each_end"),
    ("encoder: activations and other layers", r"\(encodec/modules/"),
    ("quantizer (RVQ nearest codewords)", r"\(encodec/quantization/"),
    ("batching, result copies and casts", r"\(extract/encoder\.py"),
    ("decode: soundfile read", r"\(soundfile\.py"),
    ("decode: resample", r"\(torchaudio/|^resampler "),
    ("decode: checks, mix-down", r"^load_audio "),
    ("energy stream", r"^frame_energy "),
    ("probe headers", r"^probe |^_probe_rows "),
    ("write parts (zarr, zstd)", r"^write_part |\(extract/committer\.py"),
    ("finish: parts into the store's arrays", r"^finish_store |^finish_stream "),
    ("create store (codec, weights, plan)", r"^_create |^create_store |^_codec_for_new_store "),
    ("codec set-up in a worker", r"^_encoder |^open \(extract/codec_stream\.py"),
    ("dataset protocol", r"\(extract/datasets/"),
    ("imports", r"^_find_and_load "),
    ("dask: scheduler, nanny, worker, transfers", r"\((distributed|tornado|msgpack|cloudpickle)/"),
]
IDLE = re.compile(r"^(_worker \(concurrent/futures/thread|Condition\.wait |Event\.wait |.*select \(selectors|_run_once \(asyncio|"
                  r"Queue\.get |SimpleQueue\.get|_wait_for_tstate_lock |Thread\.join |sleep |as_completed\.__next__ |"
                  r"Future\.result |.*\.wait \(multiprocessing)")


def categorise(path: Path) -> tuple[collections.Counter, collections.Counter, int]:
    """Samples per stage and per process role (main / worker), and the idle samples left out."""
    stages: collections.Counter = collections.Counter()
    roles: collections.Counter = collections.Counter()
    idle = 0
    patterns = [(name, re.compile(p)) for name, p in STAGES]
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if frames and IDLE.search(frames[-1]):
            idle += n
            continue
        role = "worker" if "multiprocessing.spawn" in stack else "main"
        stage = next((name for frame in reversed(frames) for name, pat in patterns if pat.search(frame)), "other (interpreter, click, pandas, ...)")
        stages[stage] += n
        roles[role] += n
    return stages, roles, idle


def report(path: Path) -> str:
    """The breakdown of a recorded profile, as markdown."""
    stages, roles, idle = categorise(path)
    busy = max(1, sum(stages.values()))
    lines = [f"Busy samples: {busy:,} ({', '.join(f'{r} {n / busy:.0%}' for r, n in roles.most_common())}); idle samples left out: {idle:,}.",
             "", "| stage | share of busy samples |", "|---|---|"]
    lines += [f"| {name} | {n / busy * 100:.1f} % |" for name, n in stages.most_common()]
    return "\n".join(lines)


def find_py_spy(given: str | None = None) -> str:
    """The py-spy executable: ``given``, else on PATH, else beside this Python."""
    for candidate in (given, shutil.which("py-spy"), str(Path(sys.executable).with_name("py-spy"))):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(f"py-spy not found{f' at {given}' if given else ''}: pip install py-spy (or --target DIR, then --py-spy DIR/bin/py-spy)")


def record(extract_args: list[str], out: Path, rate: int = 25, py_spy: str | None = None) -> tuple[list[str], float]:
    """Run `pipeline extract EXTRACT_ARGS` under py-spy (every process); return the command and its wall seconds."""
    cmd = [find_py_spy(py_spy), "record", "--format", "raw", "--subprocesses", "-r", str(rate), "-o", str(out), "--",
           sys.executable, "-m", "pipeline", "extract", *extract_args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return cmd, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", help="a recorded profile (py-spy --format raw) to read instead of recording")
    parser.add_argument("--out", default="/tmp/bench/profile_extract.txt", help="where to record the profile")
    parser.add_argument("--rate", type=int, default=25, help="samples per second")
    parser.add_argument("--py-spy", default=None, help="the py-spy executable (default: on PATH or beside this Python)")
    parser.add_argument("args", nargs="*", help="`pipeline extract` arguments (after --)")
    args = parser.parse_args()
    if args.raw:
        print(report(Path(args.raw)))
        return 0
    cmd, wall = record(args.args, Path(args.out), args.rate, args.py_spy)
    print("```\n" + " ".join(cmd) + f"\n```\n\n{wall:.1f} s wall under py-spy.\n")
    print(report(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

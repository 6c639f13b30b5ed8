"""One command's cost under GNU time (``/usr/bin/time -v``) as a raw result: wall, user and system
seconds, the system share of the CPU, peak RSS and page faults, plus what the command printed about
its own work (the `pipeline extract` summary line: utterances, audio seconds, its own seconds).

    python bench/timed.py --result NAME --modules extract/driver.py,... -- pipeline extract ...
    python bench/timed.py --result NAME --modules ... --from-log LOG --commit SHA --load-before 0.9,1.1,1.1 \\
        --date 2026-12-06T23:11:07Z
        --command "the command as run"     # a run already made under /usr/bin/time -v, its log kept

The second form transcribes a finished run's log (the result says so, and names the log): the stamp's
commit and command are the run's, given here, not this script's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import results as bench_results  # noqa: E402  (bench/results.py)

FIELDS = {"User time (seconds)": "user_s", "System time (seconds)": "system_s",
          "Maximum resident set size (kbytes)": "max_rss_kb", "Minor (reclaiming a frame) page faults": "minor_faults",
          "Major (requiring I/O) page faults": "major_faults", "Exit status": "exit_status"}
SUMMARY = re.compile(r"utterances: (\d+) extracted, (\d+) failed; ([\d.]+) audio seconds; (\d+) frames; .*?; ([\d.]+) s")


def parse_time_v(text: str) -> dict:
    """The figures of GNU time's ``-v`` report in ``text``: user, system and wall seconds, peak RSS (kB),
    page faults, exit status, and the system share of the CPU (when user and system time are there)."""
    out: dict = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in FIELDS:
            out[FIELDS[key]] = float(value) if "." in value else int(value)
        elif key.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in value.split(":")]
            out["wall_s"] = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    if "user_s" in out and "system_s" in out:
        cpu = out["user_s"] + out["system_s"]
        out["system_share"] = out["system_s"] / cpu if cpu > 0 else float("nan")
    return out


def parse(text: str) -> dict:
    """GNU time's -v fields and `pipeline extract`'s summary line, from a command's output."""
    out = parse_time_v(text)
    found = SUMMARY.findall(text)
    if found:
        ok, failed, audio, frames, seconds = found[-1]
        out.update(utterances=int(ok), failed=int(failed), audio_seconds=float(audio), frames=int(frames),
                   extract_seconds=float(seconds))
    if "system_share" in out:
        out["system_share"] = round(out["system_share"], 4)
    if "audio_seconds" in out and "wall_s" in out:
        out["audio_s_per_wall_s"] = round(out["audio_seconds"] / out["wall_s"], 2)
    if "max_rss_kb" in out:
        out["max_rss_gb"] = round(out["max_rss_kb"] / 1024 ** 2, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", required=True, help="comma-separated repo paths of the code the figures measure")
    parser.add_argument("--codec-weights", default=None, help="codec weights file the command used (hashed into the stamp)")
    parser.add_argument("--from-log", default=None, help="transcribe this log of a finished /usr/bin/time -v run")
    parser.add_argument("--commit", default=None, help="with --from-log: the commit the run was made at")
    parser.add_argument("--command", default=None, help="with --from-log: the command as it was run")
    parser.add_argument("--load-before", default=None, help="with --from-log: the 1, 5, 15 min load before the run")
    parser.add_argument("--date", default=None, help="with --from-log: when the run started (ISO UTC)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rec = bench_results._CURRENT[-1] if bench_results._CURRENT else None
    if args.from_log:
        text = Path(args.from_log).read_text(errors="replace")
        if rec is not None:
            rec.stamp.update(command=args.command or rec.stamp["command"], commit=args.commit or rec.stamp["commit"],
                             dirty=False, transcribed={"from": f"the /usr/bin/time -v log {args.from_log}"})
            if args.date:
                rec.stamp["date"] = args.date
            if args.load_before:
                rec.stamp["load_before"] = [float(x) for x in args.load_before.split(",")]
    else:
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=REPO, capture_output=True, text=True, check=False)
        text = done.stdout + done.stderr
        print(f"ran in {time.perf_counter() - started:.1f} s, exit {done.returncode}", file=sys.stderr)
    figures = parse(text)
    print("| " + " | ".join(figures) + " |\n|" + "---|" * len(figures) + "\n| " + " | ".join(str(v) for v in figures.values()) + " |")
    bench_results.record(codec_weights=args.codec_weights, **figures)


def declared_modules(argv: list[str]) -> list[str]:
    """``--modules`` of the command line, needed before `main` runs (the stamp is made first)."""
    for i, arg in enumerate(argv):
        if arg == "--modules" and i + 1 < len(argv):
            return [m for m in argv[i + 1].split(",") if m]
        if arg.startswith("--modules="):
            return [m for m in arg.split("=", 1)[1].split(",") if m]
    return []


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "timed", declared_modules(sys.argv[1:]) or ["?"]))

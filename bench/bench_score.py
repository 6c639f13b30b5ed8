"""Benchmark of `pipeline score` and the Detector API on CPU: files per second, real-time factor,
where the time goes (decoding, codec, head), peak memory on a 1-hour file, and how far batched
scores are from one-file-at-a-time scores.

    python bench/bench_score.py --model RUN --folder DIR [--hour-file FILE] [--threads 2] [--cli-batch-seconds 8]
        [--skip cli,api,hour] [--json FILE]

Every measurement runs in a fresh child process (this script with ``--child``), which reports its own
wall time, CPU time and peak resident memory (``ru_maxrss``), so that one measurement's memory never
counts in another's:

1. ``cli``: ``pipeline score --model RUN DIR --out CSV --batch-seconds B`` (``--cli-batch-seconds``,
   default 8: padded batches, as extraction's CPU default; `score`'s own CPU default is 0), in process
   through click.
2. ``api``: ``Detector.load(RUN, batch_seconds=0).score_files(files)`` on the same files, one file per
   encoder batch; also the Detector's time split (decode = read + resample, codec = encoder + RVQ,
   head = weighting + classifier; decoding runs in a thread beside the codec, so the three are
   thread-seconds, not shares of the wall time). Its scores against the CLI's give the difference
   between one-at-a-time and batched scoring.
3. ``hour``: the API on ``--hour-file`` (default: made by concatenating the folder's files to 3,600 s
   of 16 kHz audio), for the real-time factor and peak RSS of a long file; and ``idle``: the same
   process loading the model and scoring one short file, the baseline of that peak.

The load averages before and after each measurement are printed with it (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import results as bench_results  # noqa: E402  (bench/results.py: the raw result of this run)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, not an installed copy


def _usage() -> dict:
    self = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": self.ru_utime + self.ru_stime, "peak_rss_mib": self.ru_maxrss / 1024}


def child(kind: str, model: str, paths: list[str], out: str, threads: int, cli_batch: float) -> dict:
    """One measurement in this (fresh) process; returns its numbers."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    result: dict = {"kind": kind, "threads": threads}
    if kind == "cli":
        from pipeline.cli import main

        files = paths[0]
        try:
            main(["score", "--model", model, files, "--out", out, "--batch-seconds", str(cli_batch)],
                 standalone_mode=False)
        except SystemExit as stop:  # exit status 1 when a file failed
            result["exit"] = stop.code
        meta = json.loads(Path(f"{out}.meta.json").read_text())
        result.update(files=meta["files"], failed=meta["failed"], audio_seconds=meta["audio_seconds"],
                      timings=meta["timings_seconds"])
    else:
        from classify.detector import Detector

        detector = Detector.load(model, batch_seconds=0)
        loaded = time.perf_counter()
        rows = detector.score_files(paths[:1] if kind == "idle" else paths)
        result.update(load_seconds=loaded - started, files=len(rows), failed=sum(not r.ok for r in rows),
                      audio_seconds=sum(r.duration or 0 for r in rows if r.ok), timings=dict(detector.timings),
                      scores={r.path: r.score for r in rows})
    result["wall_seconds"] = time.perf_counter() - started
    result.update(_usage())
    return result


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(kind: str, model: str, paths: list[str], out: Path, threads: int, cli_batch: float = 8.0) -> dict:
    listing = out.with_suffix(".paths.json")
    listing.write_text(json.dumps(paths))
    before = _loadavg()
    done = subprocess.run([sys.executable, __file__, "--child", kind, "--model", model, "--paths", str(listing),
                           "--out", str(out), "--threads", str(threads), "--cli-batch-seconds", str(cli_batch)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(load_before=before, load_after=_loadavg())
    return result


def make_hour_file(files: list[str], path: Path, seconds: float = 3600.0) -> Path:
    """Concatenate (and repeat) ``files`` into one 16 kHz 16-bit WAV of ``seconds``."""
    import numpy as np
    import soundfile as sf

    if path.is_file():
        return path
    target = int(seconds * 16000)
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
        written = 0
        while written < target:
            for name in files:
                data, rate = sf.read(name, dtype="int16")
                assert rate == 16000, name
                data = data[: target - written]
                out.write(np.asarray(data))
                written += data.size
                if written >= target:
                    break
    return path


def report(results: dict) -> str:
    lines = ["| measurement | files | audio s | wall s | files/s | real-time factor | CPU s | peak RSS MiB | load before -> after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("cli", "api", "idle", "hour"):
        r = results.get(kind)
        if r is None:
            continue
        rtf = r["wall_seconds"] / max(r["audio_seconds"], 1e-9)
        lines.append(f"| {kind} | {r['files']} ({r['failed']} failed) | {r['audio_seconds']:.1f} | {r['wall_seconds']:.1f} "
                     f"| {r['files'] / r['wall_seconds']:.2f} | {rtf:.3f} | {r['cpu_seconds']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['load_before']} -> {r['load_after']} |")
    lines += ["", "| measurement | decode s | codec s | head s | decode % | codec % | head % |", "|---|---|---|---|---|---|---|"]
    for kind in ("cli", "api", "hour"):
        r = results.get(kind)
        if r is None:
            continue
        t = r["timings"]
        total = sum(t.values())
        lines.append(f"| {kind} | {t['decode']:.1f} | {t['codec']:.1f} | {t['head']:.1f} | "
                     + " | ".join(f"{100 * t[k] / total:.1f}" for k in ("decode", "codec", "head")) + " |")
    if "gap" in results:
        g = results["gap"]
        lines += ["", f"Batched (CLI, {results['cli_batch_seconds']:g} s batches) vs one file at a time (API): {g['n']} files, largest |score "
                      f"difference| {g['max']:.2e}, mean {g['mean']:.2e}, {g['over_1e-4']} files above 1e-4."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--folder")
    parser.add_argument("--hour-file")
    parser.add_argument("--work", default="/tmp/bench_score")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cli-batch-seconds", type=float, default=8.0)
    parser.add_argument("--skip", default="", help="comma-separated measurements to skip (cli, api, hour)")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        paths = json.loads(Path(args.paths).read_text())
        print(json.dumps(child(args.child, args.model, paths, args.out, args.threads, args.cli_batch_seconds)))
        return

    from extract.frontend import find_audio

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in find_audio(args.folder)]
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"model": args.model, "folder": args.folder, "threads": args.threads, "command": sys.argv,
                     "cli_batch_seconds": args.cli_batch_seconds}
    if "cli" not in skip:
        results["cli"] = measure("cli", args.model, [args.folder], work / "cli.csv", args.threads,
                                 args.cli_batch_seconds)
        print(f"cli done: {results['cli']['wall_seconds']:.1f} s", file=sys.stderr)
    if "api" not in skip:
        results["api"] = measure("api", args.model, files, work / "api", args.threads)
        print(f"api done: {results['api']['wall_seconds']:.1f} s", file=sys.stderr)
    if "cli" in results and "api" in results:
        import csv

        with open(work / "cli.csv") as handle:
            batched = {row["path"]: float(row["score"]) for row in csv.DictReader(handle) if row["score"]}
        gaps = [abs(batched[p] - s) for p, s in results["api"]["scores"].items() if p in batched and s is not None]
        results["gap"] = {"n": len(gaps), "max": max(gaps), "mean": sum(gaps) / len(gaps),
                          "over_1e-4": sum(g > 1e-4 for g in gaps)}
    if "hour" not in skip:
        hour = Path(args.hour_file) if args.hour_file else make_hour_file(files, work / "hour.wav")
        results["idle"] = measure("idle", args.model, [files[0]], work / "idle", args.threads)
        results["hour"] = measure("hour", args.model, [str(hour)], work / "hour", args.threads)
        print(f"hour done: {results['hour']['wall_seconds']:.1f} s", file=sys.stderr)
    for r in ("api", "idle", "hour"):
        if r in results:
            results[r].pop("scores", None)
    print(report(results))
    bench_results.record(raw=results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


# The code whose figures this benchmark measures (bench/figures.py marks them stale when it changes)
MODULES = [
    "classify/detector.py",
    "classify/model.py",
    "extract/encoder.py",
    "extract/codec.py",
    "extract/lsuv.py",
    "extract/audio.py",
    "extract/frontend.py",
    "common/malloc.py",
    "pipeline/commands/score.py",
    "classify/rebuild.py",
    "classify/frames.py",
]

if __name__ == "__main__":
    sys.exit(bench_results.run(main, "score", MODULES))

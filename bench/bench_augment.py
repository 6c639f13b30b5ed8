"""Speed of each augmentation and of each shipped view, on one core: audio seconds per second.

    python bench/bench_augment.py [--seconds 4] [--repeat 3] [--out bench/results/augment.json]

One process pinned to one CPU (``os.sched_setaffinity``), BLAS/OpenMP/FFT threads set to 1 before
numpy is imported. The signal: a speech-like 16 kHz test signal (harmonics of 180 Hz under a 3 Hz
envelope, plus a little noise) of ``--seconds``; each augmentation is called once to warm up (codec
contexts, FFT plans), then ``--repeat`` times with other seeds; the figure is audio seconds over the
median wall time of a call. The views of configs/views/{train,robustness}.toml are timed the same
way through ``apply_view``. Writes the result in the HELPERS.md format (``figures``: ``augment``
{name: audio s per s}, ``views`` {file: {view: audio s per s}}) and prints a table.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from extract.augment import apply_view, build, load_views  # noqa: E402

RATE = 16_000
AUGMENTS = ([{"augment": "rawboost", "algo": a} for a in range(1, 9)]
            + [{"augment": "codec", "codec": c} for c in ("mp3", "aac", "opus", "vorbis", "alaw", "ulaw", "g722", "g726", "amrnb")]
            + [{"augment": "telephony", "codec": c} for c in ("alaw", "amrnb", "none")]
            + [{"augment": "noise"}, {"augment": "reverb"}, {"augment": "reverb", "rt60_s": [0.8, 0.8]},
               {"augment": "reverb", "rooms": 1}, {"augment": "speed", "factors": [1.1]}, {"augment": "gain"}])
"""``reverb`` with its bank of 200 rooms makes a new room at nearly every call here (the cost of a
room, once per process); ``rooms=1`` times the convolution once the room is made."""


def label(spec: dict) -> str:
    rest = ",".join(f"{k}={v}" for k, v in spec.items() if k != "augment")
    return f"{spec['augment']}({rest})"


def signal(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 720), start=1))
    rng = np.random.default_rng(0)
    return (0.2 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def speed(call, seconds: float, repeat: int) -> float:
    call(0)
    times = []
    for k in range(1, repeat + 1):
        start = time.perf_counter()
        call(k)
        times.append(time.perf_counter() - start)
    return seconds / float(np.median(times))


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench/results/augment.json"))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    x = signal(args.seconds)
    before, during = loadavg(), []
    figures: dict = {"augment": {}, "views": {}}
    for spec in AUGMENTS:
        aug = build(spec)
        figures["augment"][label(spec)] = round(speed(lambda k, a=aug: a(x, RATE, np.random.default_rng(k)), args.seconds, args.repeat), 1)
        during.append(loadavg()[0])
        print(f"{label(spec):40s} {figures['augment'][label(spec)]:10.1f} audio s/s", flush=True)
    for name in ("train", "robustness"):
        views = load_views(REPO / f"configs/views/{name}.toml")
        figures["views"][name] = {}
        for view in views.values():
            rate = speed(lambda k, v=view: apply_view(v, f"utt{k}", x, RATE), args.seconds, args.repeat)
            figures["views"][name][view.name] = round(rate, 1)
            during.append(loadavg()[0])
            print(f"{name}.{view.name:34s} {rate:10.1f} audio s/s", flush=True)
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    result = {
        "benchmark": "augment", "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "codec_sha256": None, "ssl_sha256": None,
        "machine": {"cpus": os.cpu_count(), "cores_used": 1, "memory_gb": round(memory_gb, 1), "platform": platform.platform()},
        "load_before": before, "load_during": round(float(np.mean(during)), 2),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "modules": ["extract/augment/rawboost.py", "extract/augment/channel.py", "extract/augment/acoustic.py",
                    "extract/augment/views.py", "extract/avio.py"],
        "settings": {"signal_seconds": args.seconds, "repeat": args.repeat, "sample_rate": RATE, "statistic": "median call"},
        "figures": figures,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} (load {before} before, {result['load_during']} during)")


if __name__ == "__main__":
    main()

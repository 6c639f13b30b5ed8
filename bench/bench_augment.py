"""Speed of each augmentation and of each shipped view, on one core: audio seconds per second.

    python bench/bench_augment.py [--seconds 4] [--repeat 3] [--result augment]

One process pinned to one CPU (``os.sched_setaffinity``), BLAS/OpenMP/FFT threads set to 1 before
numpy is imported. The signal: a speech-like 16 kHz test signal (harmonics of 180 Hz under a 3 Hz
envelope, plus a little noise) of ``--seconds``; each augmentation is called once to warm up (codec
contexts, FFT plans), then ``--repeat`` times with other seeds; the figure is audio seconds over the
median wall time of a call. The views of configs/views/{train,robustness}.toml are timed the same
way through ``apply_view``. The result (`bench/results.py`, ``bench/results/augment.json``): ``figures``
``augment`` {name: audio s per s}, ``views`` {file: {view: audio s per s}}, ``settings``; it prints a table.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import results as bench_results  # noqa: E402  (bench/results.py: the one stamp)

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

MODULES = ["extract/augment/rawboost.py", "extract/augment/channel.py", "extract/augment/acoustic.py",
           "extract/augment/views.py", "extract/avio.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    x = signal(args.seconds)
    figures: dict = {"augment": {}, "views": {}}
    for spec in AUGMENTS:
        aug = build(spec)
        figures["augment"][label(spec)] = round(speed(lambda k, a=aug: a(x, RATE, np.random.default_rng(k)), args.seconds, args.repeat), 1)
        print(f"{label(spec):40s} {figures['augment'][label(spec)]:10.1f} audio s/s", flush=True)
    for name in ("train", "robustness"):
        views = load_views(REPO / f"configs/views/{name}.toml")
        figures["views"][name] = {}
        for view in views.values():
            rate = speed(lambda k, v=view: apply_view(v, f"utt{k}", x, RATE), args.seconds, args.repeat)
            figures["views"][name][view.name] = round(rate, 1)
            print(f"{name}.{view.name:34s} {rate:10.1f} audio s/s", flush=True)
    figures["settings"] = {"signal_seconds": args.seconds, "repeat": args.repeat, "sample_rate": RATE,
                           "statistic": "median call", "cores_used": 1}
    bench_results.record(**figures)
    return 0


if __name__ == "__main__":
    sys.exit(bench_results.run(main, "augment", MODULES))

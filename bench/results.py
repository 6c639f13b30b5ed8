"""The raw result of a benchmark: ``bench/results/NAME.json``, the one source of every published figure.

Every benchmark writes its figures through this module, with a stamp that says what was measured and
where::

    {"benchmark": NAME, "command": the exact command line, "commit": git sha, "dirty": bool,
     "codec_sha256": sha or null, "ssl_sha256": sha or null,
     "machine": {"cpus", "memory_gb", "platform", "cpu_model", "python"},
     "load_before": [1, 5, 15 min load], "load_during": mean 1-min load while it ran,
     "date": ISO UTC (the start), "finished": ISO UTC, "modules": [repo paths of the code it measures],
     "figures": {...}}

``modules`` is what `bench/figures.py check` watches: a figure is stale once one of them changes after
``commit``. Declare the product code the figures measure (``extract/encoder.py``, ``classify/``), not
the benchmark script. ``figures`` holds plain JSON values; a table is ``{"columns": [...], "rows":
[[...], ...]}`` (cells as they should print). A new figure in a document is this file plus a marker
(BENCHMARKS.md, "How the figures are made").

Use::

    from results import Recorder           # bench/ is on sys.path when a bench script runs
    with Recorder("extract", modules=["extract/encoder.py", "extract/run.py"]) as rec:
        ...
        rec.codec_weights("path/to/codec_weights.th")   # or rec.stamp["codec_sha256"] = sha
        rec.figures["bytes_per_s"] = 828
    # written on a clean exit, never after an exception (a half run is not a result)

Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KEYS = ("benchmark", "command", "commit", "dirty", "codec_sha256", "ssl_sha256", "machine", "load_before", "load_during",
        "date", "modules", "figures")


def _git(*args: str, cwd: Path = REPO) -> str:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (``os.getloadavg``), or [] where there are none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return []


def machine() -> dict:
    """CPUs, memory (GB), platform, CPU model and Python of this machine."""
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        pass
    model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gb": memory, "platform": platform.platform(), "cpu_model": model,
            "python": platform.python_version()}


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def command_line(argv: list[str] | None = None) -> str:
    """The command as it was typed, as near as it can be told: ``python SCRIPT ARGS`` (shell-quoted)."""
    argv = sys.argv if argv is None else argv
    script = argv[0] if argv else "?"
    try:
        script = os.path.relpath(script, os.getcwd())
    except ValueError:
        pass
    return shlex.join(["python", script, *argv[1:]])


def stamp(name: str, modules: list[str], command: str | None = None) -> dict:
    """Every key of a result but ``figures``, ``load_during`` and the end: taken at the start of a run."""
    if not modules:
        raise ValueError(f"benchmark {name!r}: declare the modules its figures measure (repo paths)")
    missing = [m for m in modules if not (REPO / m).exists()]
    if missing:
        raise ValueError(f"benchmark {name!r}: declared module(s) not in the repository: {', '.join(missing)}")
    return {"benchmark": name, "command": command or command_line(), "commit": _git("rev-parse", "HEAD") or None,
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")), "codec_sha256": None, "ssl_sha256": None,
            "machine": machine(), "load_before": loadavg(), "load_during": None,
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "modules": list(modules), "figures": {}}


def write(result: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``result`` (every key of `KEYS`) to ``OUT_DIR/NAME.json`` (default ``bench/results``), whole."""
    absent = [k for k in KEYS if k not in result]
    if absent:
        raise ValueError(f"result {result.get('benchmark')!r} lacks {', '.join(absent)}")
    folder = Path(out_dir) if out_dir is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['benchmark']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


class Recorder:
    """Stamp at the start, sample the load while the benchmark runs, write the result on a clean exit."""

    def __init__(self, name: str, modules: list[str], command: str | None = None, out_dir: str | os.PathLike | None = None,
                 interval_s: float = 5.0):
        self.stamp = stamp(name, modules, command)
        self.figures: dict = self.stamp["figures"]
        self.out_dir = out_dir
        self.path: Path | None = None
        self._interval = interval_s
        self._loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            load = loadavg()
            if load:
                self._loads.append(load[0])
            if self._stop.wait(self._interval):
                return

    def codec_weights(self, path: str | os.PathLike | None, sha256: str | None = None) -> None:
        self.stamp["codec_sha256"] = sha256 or (sha256_file(path) if path else None)

    def ssl_weights(self, path: str | os.PathLike | None, sha256: str | None = None) -> None:
        self.stamp["ssl_sha256"] = sha256 or (sha256_file(path) if path else None)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def finish(self) -> Path:
        self._stop.set()
        self._thread.join()
        load = loadavg()
        if load:
            self._loads.append(load[0])
        self.stamp["load_during"] = round(sum(self._loads) / len(self._loads), 2) if self._loads else None
        self.stamp["finished"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.path = write(self.stamp, self.out_dir)
        print(f"result: {self.path}", file=sys.stderr)
        return self.path

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self._stop.set()


def table(columns: list[str], rows: list[list]) -> dict:
    """A table figure: rendered by `bench/figures.py` as a markdown table (cells printed as given)."""
    return {"columns": list(columns), "rows": [list(r) for r in rows]}

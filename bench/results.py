"""The raw result of a benchmark: ``bench/results/NAME.json``, the one source of every published figure.

Every benchmark writes its figures through this module, with a stamp that says what was measured and
where::

    {"benchmark": NAME, "command": the exact command line, "commit": git sha, "dirty": bool (changes
     to tracked files other than benchmark outputs, is_dirty),
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

or ``rec = Recorder(...)`` at the start and ``rec.finish()`` at the end. What the benchmark prints is
passed through and kept: its markdown tables become figures too (``figures.tables.HEADING``, see
`markdown_tables`). Every bench script takes ``--result NAME`` (``none``: write nothing, for a quick
check that must not replace a real result).

Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
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


OUTPUTS = ("bench/results/", "bench/RESULTS_")
"""What benchmarks write into the tree (raw results, reports): not changes to what they measure."""


def is_dirty(changed: list[str]) -> bool:
    """Whether tracked paths ``changed`` since the commit include anything but benchmark outputs
    (:data:`OUTPUTS`: a run after another in the same tree would otherwise count the first's result)."""
    return any(not path.startswith(OUTPUTS) for path in changed)


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
    missing = [m for m in modules if not (REPO / m).exists()]  # a typo would never go stale
    if missing:
        raise ValueError(f"benchmark {name!r}: declared module(s) not in the repository: {', '.join(missing)}")
    return {"benchmark": name, "command": command or command_line(), "commit": _git("rev-parse", "HEAD") or None,
            "dirty": is_dirty(_git("diff", "--name-only", "HEAD").splitlines()), "codec_sha256": None, "ssl_sha256": None,
            "machine": machine(), "load_before": loadavg(), "load_during": None,
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "modules": list(modules), "figures": {}}


def write(result: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``result`` (every key of `KEYS`) to ``OUT_DIR/NAME.json`` (default ``$BENCH_RESULTS_DIR``, else
    ``bench/results``), whole."""
    absent = [k for k in KEYS if k not in result]
    if absent:
        raise ValueError(f"result {result.get('benchmark')!r} lacks {', '.join(absent)}")
    folder = Path(out_dir) if out_dir is not None else Path(os.environ.get("BENCH_RESULTS_DIR") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['benchmark']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


class _Tee(io.StringIO):
    """Keeps what is printed and passes it on."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(text)
        return super().write(text)

    def flush(self) -> None:
        self._stream.flush()


class Recorder:
    """Stamp at the start, sample the load while the benchmark runs, write the result on a clean exit."""

    def __init__(self, name: str, modules: list[str], command: str | None = None, out_dir: str | os.PathLike | None = None,
                 interval_s: float = 5.0, tee: bool = True):
        self.stamp = stamp(name, modules, command)
        self._stdout = None
        if tee:  # the printed report's tables become figures (`markdown_tables`)
            self._stdout, sys.stdout = sys.stdout, _Tee(sys.stdout)
        self.figures: dict = self.stamp["figures"]
        self.out_dir = out_dir
        self.path: Path | None = None
        self._interval = interval_s
        self._loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()  # the load is sampled from here on

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
        return self

    def finish(self) -> Path | None:
        """Stop sampling and write the result (nothing when the benchmark was named ``none``)."""
        self._stop.set()
        self._thread.join()
        load = loadavg()
        if load:
            self._loads.append(load[0])
        transcribed = bool(self.stamp.get("transcribed"))  # a run made earlier: the load now is not its load
        self.stamp["load_during"] = round(sum(self._loads) / len(self._loads), 2) if self._loads and not transcribed else None
        self.stamp["finished"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self._stdout is not None:
            printed, sys.stdout = sys.stdout.getvalue(), self._stdout
            self._stdout = None
            for key, value in markdown_tables(printed).items():
                self.figures.setdefault("tables", {}).setdefault(key, value)
        if self.stamp["benchmark"] == "none":
            return None
        self.path = write(self.stamp, self.out_dir)
        print(f"result: {self.path}", file=sys.stderr)
        return self.path

    def abort(self) -> None:
        """Stop without writing anything (the benchmark failed: a half run is not a result)."""
        self._stop.set()
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


def table(columns: list[str], rows: list[list]) -> dict:
    """A table figure: rendered by `bench/figures.py` as a markdown table (cells printed as given)."""
    return {"columns": list(columns), "rows": [list(r) for r in rows]}


def markdown_tables(text: str) -> dict:
    """The markdown tables of a benchmark's printed report as table figures, keyed by the heading above
    each (its first six words before any ":" or "(", lower case, joined by ``_``; ``_2``, ``_3`` for a
    second or third table under one heading),
    so that a report's tables become figures without retyping them."""
    tables: dict = {}
    heading, lines, i = "report", text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            title = re.split(r"[:(]", line.lstrip("#").strip(), maxsplit=1)[0]  # "Throughput (2 rounds)" -> throughput
            heading = "_".join(re.findall(r"[a-z0-9]+", title.lower())[:6]) or "report"
        elif line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            cells = lambda row: [c.strip() for c in row.strip()[1:-1].split("|")]  # noqa: E731
            columns, rows, i = cells(line), [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            key, n = heading, 2
            while key in tables:
                key, n = f"{heading}_{n}", n + 1
            tables[key] = table(columns, rows)
            continue
        i += 1
    return tables


def add_argument(parser, default: str) -> None:
    """``--result NAME``: the result file this run writes (``bench/results/NAME.json``; ``none``: none)."""
    parser.add_argument("--result", default=default, metavar="NAME",
                        help="write the raw result to bench/results/NAME.json (default: %(default)s; none: do not)")


_CURRENT: list[Recorder] = []


def record(codec_weights: str | os.PathLike | None = None, ssl_weights: str | os.PathLike | None = None, **figures) -> None:
    """From inside a benchmark run by `run`: add figures (the raw numbers it measured) and the weights'
    files (hashed). Does nothing when the script was not started through `run` (imported, a child)."""
    if not _CURRENT:
        return
    rec = _CURRENT[-1]
    if codec_weights is not None and Path(codec_weights).is_file():
        rec.codec_weights(codec_weights)
    if ssl_weights is not None and Path(ssl_weights).is_file():
        rec.ssl_weights(ssl_weights)
    rec.figures.update(figures)


def run(main, name: str, modules: list[str], skip=("--child",)) -> int:
    """Run a bench script's ``main()`` and write its result: ``--result NAME`` (taken out of
    ``sys.argv`` before ``main`` parses it; default ``name``; ``none``: no file) names it. A run with one
    of ``skip`` in its arguments (a child process of the benchmark) is run bare."""
    argv = sys.argv[1:]
    if any(a in argv for a in (*skip, "-h", "--help")):
        return main() or 0
    command = command_line()
    for i, arg in enumerate(argv):
        if arg == "--result" and i + 1 < len(argv):
            name = argv[i + 1]
            del argv[i:i + 2]
            break
        if arg.startswith("--result="):
            name = arg.split("=", 1)[1]
            del argv[i]
            break
    sys.argv[1:] = argv
    rec = Recorder(name, modules, command=command)
    _CURRENT.append(rec)
    try:
        status = main() or 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if status:
            rec.abort()
            raise
    except BaseException:
        rec.abort()
        raise
    finally:
        _CURRENT.remove(rec)
    if status == 0:
        rec.finish()
    return status

"""The stamp every bench/results/NAME.json carries (HELPERS.md: benchmark results), until the
figures session's bench/results.py helper lands: command, commit, machine, load, date, modules."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """The mean 1-minute load average while it runs (sampled every ``every`` seconds in a thread)."""

    def __init__(self, every: float = 2.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def mean(self) -> float:
        self._stop.set()
        return round(sum(self.samples) / len(self.samples), 2) if self.samples else load()[0]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def result(name: str, argv: list[str], load_before: list[float], modules: list[str], figures: dict,
           load_during: float | None = None, codec_sha256: str | None = None, ssl_sha256: str | None = None) -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"benchmark": name, "command": shlex.join(["python", *argv]), "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")), "codec_sha256": codec_sha256,
            "ssl_sha256": ssl_sha256,
            "machine": {"cpus": os.cpu_count(), "memory_gb": round(memory, 1), "platform": platform.platform()},
            "load_before": load_before, "load_during": load_during if load_during is not None else load()[0],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "modules": modules, "figures": figures}

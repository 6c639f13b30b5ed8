"""How an extraction runs on CPUs by default: in this process or on ``--workers N`` processes, chosen
by the corpus's audio hours and the machine's memory (:func:`choose_workers`).

Measured on offla19 (1.2 audio hours, 2 cores; BENCHMARKS.md section 1): ``--workers 2`` (one torch
thread each) is 1.09x ``--workers 1`` and about 10 % faster than the in-process default, because two
single-thread encoders spend less CPU than one two-thread encoder and overlap decoding and writing;
but a LocalCluster's start-up (scheduler, nanny, torch and the codec imported again in each worker)
costs about 17 CPU s, so a small job is faster in this process; and each worker holds 3.4 to 4.1 GB
at its peak (the command's own process about 1 GB beside them). Hence:

* under :data:`MIN_HOURS` of audio: in this process (the start-up would eat the gain);
* else as many single-thread workers as there are cores, at most as many as the available memory
  holds at :data:`WORKER_GB` each (after :data:`MAIN_GB` for the command's process);
* fewer than 2 workers fit: in this process (one worker is no faster than this process, 0.87 vs 0.85
  of the bare encoder, and costs the start-up).

A GPU run is not chosen here (one worker per GPU); an explicit ``--workers`` or ``--scheduler`` wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MIN_HOURS = 1.0
"""Audio hours from which worker processes pay for their start-up (about 10 % of an hour's time)."""
WORKER_GB = 4.1
"""A codec worker's measured peak memory (3.4-4.1 GB on offla19), the larger."""
MAIN_GB = 1.0
"""The command's own process beside its workers (0.95 GB measured)."""
PROBE_FILES = 200
"""Files whose headers estimate a corpus's audio hours (evenly spread over its protocol)."""


def choose_workers(audio_hours: float, memory_gb: float, cpus: int) -> tuple[int, str]:
    """(worker processes, 0 = this process; the reason in words) for a CPU extraction."""
    if audio_hours < MIN_HOURS:
        return 0, (f"in this process: {audio_hours:.2f} audio hours is under {MIN_HOURS:g} h, where worker "
                   "processes' start-up (about 17 CPU s) costs more than their 10 % gain")
    fit = int(max(0.0, memory_gb - MAIN_GB) // WORKER_GB)
    workers = min(max(1, cpus), fit)
    if workers < 2:
        why = (f"only {fit} worker(s) of {WORKER_GB:g} GB fit in {memory_gb:.1f} GB available" if fit < cpus
               else f"{cpus} core(s): one worker is no faster than this process")
        return 0, f"in this process: {why}"
    return workers, (f"--workers {workers}: {audio_hours:.1f} audio hours (>= {MIN_HOURS:g} h), one single-thread "
                     f"worker per core ({cpus}) within {memory_gb:.1f} GB available at {WORKER_GB:g} GB each; "
                     "about 10 % faster than one process (BENCHMARKS.md section 1)")


def available_memory_gb() -> float:
    """Memory available now (psutil, which dask brings), else the machine's total."""
    try:
        import psutil  # noqa: PLC0415

        return psutil.virtual_memory().available / 1e9
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def estimate_audio_hours(paths: list[str], probe_files: int = PROBE_FILES) -> float:
    """The corpus's audio hours, from the headers of ``probe_files`` files evenly spread over
    ``paths`` (files that cannot be read count as 0 s)."""
    from .audio import AudioError, probe  # noqa: PLC0415

    if not paths:
        return 0.0
    picks = np.unique(np.linspace(0, len(paths) - 1, min(probe_files, len(paths))).astype(int))
    seconds = []
    for i in picks:
        try:
            seconds.append(probe(Path(paths[i])).duration)
        except AudioError:
            seconds.append(0.0)
    return float(np.mean(seconds)) * len(paths) / 3600

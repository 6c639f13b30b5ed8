"""The CPU extraction's default by size (`extract.sizing`): in this process for small corpora or
little memory, else one worker per core within the memory; the audio hours estimated from headers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from extract.sizing import MAIN_GB, WORKER_GB, choose_workers, estimate_audio_hours


def naive(hours: float, memory_gb: float, cpus: int) -> int:
    """The rule restated: workers that fit in memory, one per core, none under an hour or below two."""
    if hours < 1.0:
        return 0
    n = 0
    while n < cpus and MAIN_GB + (n + 1) * WORKER_GB <= memory_gb:
        n += 1
    return n if n >= 2 else 0


@pytest.mark.parametrize("hours", [0.0, 0.5, 0.99, 1.0, 24.0, 300.0])
@pytest.mark.parametrize("memory_gb", [2.0, 5.0, 9.2, 9.3, 23.5, 128.0])
@pytest.mark.parametrize("cpus", [1, 2, 16])
def test_choice_follows_the_rule(hours, memory_gb, cpus):
    workers, why = choose_workers(hours, memory_gb, cpus)
    assert workers == naive(hours, memory_gb, cpus)
    assert why.startswith("in this process" if workers == 0 else f"--workers {workers}")


def test_the_measured_cases():
    assert choose_workers(1.2, 23.5, 2)[0] == 2  # offla19's size on this machine: --workers 2 (1.09x)
    assert choose_workers(0.02, 23.5, 2)[0] == 0  # a small job: start-up would cost more
    workers, why = choose_workers(24.0, 6.0, 16)  # ASVspoof 2019 LA train on a small-memory machine
    assert workers == 0 and "fit in 6.0 GB" in why
    assert choose_workers(24.0, 64.0, 16)[0] == 15  # memory-bound: (64 - 1) // 4.1


def test_audio_hours_come_from_a_sample_of_headers(tmp_path):
    paths = []
    for i, seconds in enumerate([1.0, 2.0, 3.0, 4.0] * 5):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.zeros(int(seconds * 16000), np.float32), 16000)
        paths.append(str(path))
    assert estimate_audio_hours(paths) == pytest.approx(50.0 / 3600)  # all 20 probed: exact
    # 4 of 20 evenly spread (0, 6, 12, 19: 1, 3, 1, 4 s) -> mean 2.25 s x 20 files
    assert estimate_audio_hours(paths, probe_files=4) == pytest.approx(2.25 * 20 / 3600)
    assert estimate_audio_hours([str(tmp_path / "missing.wav"), paths[1]]) == pytest.approx(2.0 * 2 / 2 / 3600)
    assert estimate_audio_hours([]) == 0.0

"""Running `pipeline` commands as real processes, killing them, and comparing what they leave."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from common.faults import ENV as FAULT_ENV
from common.faults import ONCE_ENV
from extract.run import ExtractConfig
from store import format as sf
from store.reader import FeatureStore
from store.verify import verify_store

ROOT = Path(__file__).resolve().parents[2]
KILL_AT_STEP_ENV = "RVQ_TEST_KILL_AT_STEP"  # tests.reliability.kill_at_step.ENV (that module imports torch)
SMALL_CODEC = ["--weights", "untrained", "--set", "kmeans_frames=1024", "--set", "kmeans_iters=3", "--set", "device='cpu'",
               "--set", "torch_threads=1"]


def extract_args(corpus: Path, out: Path, workers: int, unit_size: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    return ["extract", "--dataset", "asv19", "--root", str(corpus), "--out", str(out), "--workers", str(workers),
            *SMALL_CODEC, "--set", f"unit_size={unit_size}", *extra]


def extract_config(corpus: Path, out: Path, unit_size: int = 1, **overrides) -> ExtractConfig:
    """The settings of :func:`extract_args`, for an extraction in this process."""
    return ExtractConfig(dataset="asv19", root=str(corpus), out=str(out), weights="untrained", kmeans_frames=1024,
                         kmeans_iters=3, device="cpu", torch_threads=1, unit_size=unit_size, **overrides)


@dataclass
class Outcome:
    returncode: int
    killed: bool  # killed by the test (SIGKILL from outside, or its own fault point)
    seconds: float
    stdout: str
    stderr: str


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run_pipeline(args: list[str], log_dir: Path, fault: str | None = None,
                 kill_when: Callable[[float], bool] | None = None, timeout: float = 900,
                 orphans_grace: float = 0.0, once: Path | None = None, env: dict[str, str] | None = None,
                 on_poll: Callable[[subprocess.Popen], None] | None = None,
                 kill_at_step: int | None = None) -> Outcome:
    """Run ``python -m pipeline ARGS``; SIGKILL it when ``kill_when(seconds since start)`` says so, or
    let its fault point ``fault`` (`common.faults`) kill it (only the first process to reach it when
    ``once`` names a marker file). Processes it started (dask workers) are left ``orphans_grace``
    seconds to do what orphans do, then killed, as a user would find them. ``env``: extra environment
    variables; ``on_poll(process)`` is called at each poll (to act on it while it runs);
    ``kill_at_step`` N: the process SIGKILLs itself right after its N-th optimizer step
    (`tests.reliability.kill_at_step`: a mid-epoch kill at an exact place, never outrun)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns()}"
    out_path, err_path = log_dir / f"{stamp}.out", log_dir / f"{stamp}.err"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop(FAULT_ENV, None)
    env.pop(ONCE_ENV, None)
    env.pop(KILL_AT_STEP_ENV, None)
    module = "pipeline"
    if kill_at_step is not None:
        env[KILL_AT_STEP_ENV], module = str(kill_at_step), "tests.reliability.kill_at_step"
    if fault:
        env[FAULT_ENV] = fault
    if once:
        env[ONCE_ENV] = str(once)
    started = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=err, env=env, cwd=ROOT)
        killed = False
        children: list[psutil.Process] = []
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"pipeline {' '.join(args)} ran over {timeout} s")
            children = _descendants(proc.pid) or children
            if on_poll is not None:
                on_poll(proc)
            if kill_when is not None and kill_when(elapsed):
                children = _descendants(proc.pid) or children
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
        proc.wait()
    seconds = time.monotonic() - started
    if children:
        time.sleep(orphans_grace)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    killed = killed or proc.returncode == -signal.SIGKILL
    return Outcome(proc.returncode, killed, seconds, out_path.read_text(), err_path.read_text())


def committed_units(store: Path, group: str = "") -> int:
    """Work units whose records are written (the commit), read from plain files as a poller would."""
    parts = store / group / sf.PARTS if group else store / sf.PARTS
    count = 0
    for meta in parts.glob("u*/zarr.json"):
        try:
            count += "records" in json.loads(meta.read_text()).get("attributes", {})
        except (OSError, ValueError):
            pass
    return count


def state(store: Path) -> str | None:
    try:
        return json.loads((store / "zarr.json").read_text()).get("attributes", {}).get("state")
    except (OSError, ValueError):
        return None


def check_consistent(store: Path) -> None:
    """What a kill may leave: a creation in progress, an extraction with readable commit records, or a
    complete store that verifies. Never a torn attribute file or a torn commit record."""
    meta = store / "zarr.json"
    if meta.exists():
        json.loads(meta.read_text())  # never torn
    for part in (store / sf.PARTS).glob("u*/zarr.json"):
        json.loads(part.read_text())
    if state(store) == sf.STATE_COMPLETE:  # (a stream being added is not finished: not checked yet)
        report = verify_store(str(store), pending_streams_ok=True)
        assert report.ok, report.format()


def assert_same_store(got: Path, expected: Path) -> None:
    """The same content: every stream's frames and offsets, tables, utterance rows, codebooks, weights."""
    a, b = FeatureStore(str(got)), FeatureStore(str(expected))
    assert a.codec == b.codec
    assert sorted(a.streams) == sorted(b.streams)
    for name in b.streams:
        x, y = a.stream(name), b.stream(name)
        assert np.array_equal(x.offsets, y.offsets), name
        assert np.array_equal(x.data[...], y.data[...]), name
    assert np.array_equal(a.codebooks, b.codebooks)
    pd.testing.assert_frame_equal(a.utterances, b.utterances)
    pd.testing.assert_frame_equal(a.failures, b.failures)
    assert a.utterances["utt_id"].is_unique
    assert a.files.read_bytes(sf.WEIGHTS) == b.files.read_bytes(sf.WEIGHTS)
    for leftover in (sf.PARTS, sf.PLAN, sf.PROBLEMS, "lock.json"):
        assert not a.files.exists(leftover), leftover
    report = verify_store(str(got))
    assert report.ok, report.format()


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Training in a subprocess on one thread: bit-identical results need the same thread count."""
TRAIN_SETTINGS = ["--device", "cpu", "--set", "batch_size=4", "--set", "lr=1e-2", "--set", "warmup_steps=0",
                  "--set", "crop_seconds=0.8", "--set", "patience=0", "--set", "head_kwargs={proj_dim=16, hidden_dim=16}"]


def history_lines(run: Path) -> int:
    try:
        return len((run / "history.jsonl").read_text().splitlines())
    except OSError:
        return 0


def sweep_toml(epochs: int, seeds: list[int]) -> str:
    """A tiny sweep file: variants mean and scalar x ``seeds``, ``epochs`` epochs each."""
    return f"""[base]
epochs = {epochs}
batch_size = 8
lr = 1e-2
warmup_steps = 0
crop_seconds = 0.4
patience = 0
device = "cpu"
head_kwargs = {{proj_dim = 8, hidden_dim = 8}}

[grid]
variant = ["mean", "scalar"]
seed = {seeds}
"""

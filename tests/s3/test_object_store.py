"""Stores on an S3 object store (moto's real S3 API server, started by the tests), written by a dask
cluster of separate processes (`dask scheduler`, two `dask worker` commands) and read by every
command; the lease on the object store; credentials never in any output, store or run folder."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extract.datasets.demo import generate_demo_corpus
from tests.reliability.helpers import SMALL_CODEC
from tests.s3.conftest import child_env, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def pipeline(server, *args, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                            env=child_env(server), timeout=timeout)
    if check:
        assert result.returncode == 0, f"pipeline {' '.join(map(str, args))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


class Cluster:
    """`dask scheduler` and two `dask worker` processes, each started as its own command, as an
    operator would on separate machines."""

    def __init__(self, server, logs: Path):
        dask = shutil.which("dask", path=str(BIN)) or "dask"
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        env = child_env(server)
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                       stdout=(logs / "scheduler.log").open("w"), stderr=subprocess.STDOUT, env=env)]
        time.sleep(2)
        self.workers = []
        for i in range(2):
            worker = subprocess.Popen([dask, "worker", self.address, "--nthreads", "1", "--no-dashboard",
                                       "--name", f"w{i}", "--no-nanny"],
                                      stdout=(logs / f"worker{i}.log").open("w"), stderr=subprocess.STDOUT, env=env)
            self.workers.append(worker)
            self.procs.append(worker)
        self.logs = logs

    def wait_for_workers(self, n: int = 2, timeout: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs.glob("*.log"))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def no_secret_in(server, texts: list[str], fs, prefixes: list[str], folders: list[Path]) -> None:
    key, secret = server.secrets
    for text in texts:
        assert key not in text and secret not in text
    fs.invalidate_cache()  # s3fs caches listings: read what is there now
    for prefix in prefixes:
        for path in fs.find(prefix):
            data = fs.cat(path)
            assert key.encode() not in data and secret.encode() not in data, path
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert key.encode() not in data and secret.encode() not in data, path


def test_a_cluster_of_separate_processes_extracts_into_s3_and_every_command_reads_it(s3_env, tmp_path):
    server = s3_env
    fs = server.fs()
    bucket = server.bucket("features")
    corpus = tmp_path / "corpus"
    generate_demo_corpus(corpus, {"train": 8, "dev": 6, "eval": 6})
    store = f"s3://{bucket}/demo.zarr"
    cluster = Cluster(server, tmp_path / "logs")
    outputs = []
    try:
        cluster.wait_for_workers()
        extracted = pipeline(server, "extract", "--dataset", "asv19", "--root", corpus, "--out", store,
                             "--scheduler", cluster.address, *SMALL_CODEC, "--set", "unit_size=3")
        outputs.append(extracted.stdout + extracted.stderr)
        assert "20 extracted, 0 failed" in extracted.stdout
        worker_logs = cluster.output()
        assert worker_logs.count("Starting Worker") >= 2 or "w1" in worker_logs
    finally:
        cluster.close()
    outputs.append(cluster.output())

    for args in (("verify", store), ("inspect", store, "--json")):
        result = pipeline(server, *args)
        outputs.append(result.stdout + result.stderr)
    assert "OK: every check passed" in outputs[-2]
    info = json.loads(outputs[-1])
    assert info["store"] == store and info["state"] == "complete"

    run = tmp_path / "run"
    result = pipeline(server, "train", "--features", store, "--out", run, "--set", "epochs=2", "--set", "batch_size=8")
    outputs.append(result.stdout + result.stderr)
    result = pipeline(server, "evaluate", "--model", run, "--features", store, "--split", "eval", "--out", tmp_path / "eval")
    outputs.append(result.stdout + result.stderr)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["eer"] <= 1.0 and "UNTRAINED" in metrics["codec_weights"]["label"]
    flac = next((corpus / "LA").rglob("*.flac"))
    result = pipeline(server, "score", "--model", run, flac)
    outputs.append(result.stdout + result.stderr)
    assert flac.name in result.stdout
    result = pipeline(server, "sweep", "--features", store, "--config", Path("configs/sweeps/tiny.toml").resolve(),
                      "--out", tmp_path / "sweep", "--workers", "0")
    outputs.append(result.stdout + result.stderr)

    no_secret_in(server, outputs, fs, [bucket], [run, tmp_path / "eval", tmp_path / "sweep"])


def test_the_lease_on_an_object_store_refuses_a_second_writer_and_is_taken_over_after_a_kill(s3_env, tmp_path):
    server = s3_env
    bucket = server.bucket("leases")
    corpus = tmp_path / "corpus"
    generate_demo_corpus(corpus, {"train": 4, "dev": 2, "eval": 2})
    store = f"s3://{bucket}/held.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom common.lease import Lease\n"
         f"lease = Lease({store!r}).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True, env=child_env(server))
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pipeline(server, "extract", "--dataset", "asv19", "--root", corpus, "--out", store, *SMALL_CODEC,
                           check=False)
        assert refused.returncode != 0
        message = refused.stdout + refused.stderr
        assert f"pid {holder.pid}" in message and "Traceback" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    taken = pipeline(server, "extract", "--dataset", "asv19", "--root", corpus, "--out", store, *SMALL_CODEC)
    assert "8 extracted, 0 failed" in taken.stdout
    no_secret_in(server, [refused.stdout + refused.stderr, taken.stdout + taken.stderr], server.fs(), [bucket], [])


def test_a_worker_killed_mid_extraction_loses_nothing_and_the_rerun_resumes(s3_env, tmp_path):
    server = s3_env
    bucket = server.bucket("killed")
    corpus = tmp_path / "corpus"
    generate_demo_corpus(corpus, {"train": 10, "dev": 4, "eval": 4})
    store = f"s3://{bucket}/k.zarr"
    cluster = Cluster(server, tmp_path / "logs")
    try:
        cluster.wait_for_workers()
        args = [sys.executable, "-m", "pipeline", "extract", "--dataset", "asv19", "--root", str(corpus), "--out", store,
                "--scheduler", cluster.address, *SMALL_CODEC, "--set", "unit_size=1"]
        run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(server))
        fs = server.fs()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:  # kill a worker once some units are committed
            if len([p for p in fs.find(f"{bucket}/k.zarr") if p.endswith("zarr.json") and "/parts/" in p]) >= 2:
                break
            time.sleep(0.5)
        cluster.workers[0].send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=600)
    finally:
        cluster.close()
    # the run either finished on the surviving worker or stopped; a re-run (in process) completes it
    rerun = pipeline(server, "extract", "--dataset", "asv19", "--root", corpus, "--out", store, *SMALL_CODEC,
                     "--set", "unit_size=1", "--workers", "0")
    assert "18 extracted, 0 failed" in rerun.stdout
    if "already complete" not in rerun.stdout + rerun.stderr:  # the first run stopped: the re-run resumed it
        assert int(re.search(r"(\d+) already done", rerun.stdout)[1]) >= 2  # the units committed before the kill were kept
    # else the surviving worker finished the run (dask moved the killed worker's units to it)
    verified = pipeline(server, "verify", store)
    assert "OK: every check passed" in verified.stdout
    info = json.loads(pipeline(server, "inspect", store, "--json").stdout)
    assert info["store"] == store and info["state"] == "complete"
    no_secret_in(server, [output, rerun.stdout + rerun.stderr, verified.stdout], fs, [bucket], [])

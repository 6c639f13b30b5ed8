"""Two `extract` processes on one store at once: the second is refused with a message naming the
holder (host, pid, start time), and the first finishes a store that verifies. (Before the lease, the
second died with a `FileNotFoundError: .../plan.parquet` stack trace when the first finished.)
The same for two `train` runs into one folder: tests/reliability/test_train_kills.py."""

from __future__ import annotations

import json
import os
import socket
import time

from click.testing import CliRunner

from common.lease import Lease
from extract.datasets import generate_demo_corpus
from pipeline.cli import main
from store.verify import verify_store
from tests.synthetic import synthetic_store

from .helpers import extract_args, run_pipeline


def test_a_second_extraction_on_the_same_store_is_refused(tmp_path):
    corpus = generate_demo_corpus(tmp_path / "demo", n_per_split={"train": 4, "dev": 2, "eval": 2}, seed=11)
    store = tmp_path / "s.zarr"
    second = {}

    def start_second_once_the_first_holds_the_store(proc) -> None:
        lock = store / "lock.json"
        if second or not (store / "plan.parquet").exists() or not lock.exists():
            return
        holder = json.loads(lock.read_text())
        started = time.monotonic()
        second["result"] = CliRunner().invoke(main, extract_args(corpus, store, 0))
        second.update(seconds=time.monotonic() - started, holder=holder, first=proc.pid)

    first = run_pipeline(extract_args(corpus, store, 0), tmp_path / "logs", on_poll=start_second_once_the_first_holds_the_store)
    assert first.returncode == 0, first.stderr[-2000:]
    result, holder = second["result"], second["holder"]
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert holder["pid"] == second["first"]
    assert (f"{store}: this store is in use by another process (host {socket.gethostname()}, pid {second['first']}, "
            f"started {holder['started_at']}") in result.output
    assert "Wait for it to finish, or stop it" in result.output
    assert second["seconds"] < 30  # refused at once, before any audio is read
    assert verify_store(str(store)).ok and not (store / "lock.json").exists()


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path):
    store = synthetic_store(str(tmp_path / "s.zarr"), n_per_split=8, latent=False)
    config = tmp_path / "sweep.toml"
    config.write_text('[base]\nepochs = 1\ndevice = "cpu"\n[grid]\nvariant = ["mean"]\n')
    out = tmp_path / "out"
    with Lease(str(out), "sweep"):  # as a running `pipeline sweep --out out` holds it
        result = CliRunner().invoke(main, ["sweep", "--features", store, "--config", str(config), "--out", str(out),
                                           "--workers", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{out}: this sweep is in use by another process (host {socket.gethostname()}, pid {os.getpid()}" in result.output
    assert not (out / "results.parquet").exists() and not (out / "trials").exists()

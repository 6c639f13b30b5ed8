"""A full disk (ENOSPC, simulated in-process by failing the writers' file writes partway): the
command stops with one clear line naming the file, nothing already done is lost, no half-written
file is left where a reader looks, and the same command resumes once there is space again."""

from __future__ import annotations

import errno
from pathlib import Path

import fsspec.implementations.local as fsspec_local
import pytest
import torch
import zarr.storage._local as zarr_local
from click.testing import CliRunner

from classify.checkpoint import load_checkpoint
from classify.sweep import read_results
from common import atomic
from extract.datasets import generate_demo_corpus
from extract.run import extract
from pipeline.cli import main
from tests.synthetic import synthetic_store

from .helpers import SMALL_CODEC, TRAIN_SETTINGS, assert_same_store, extract_config, state, sweep_toml

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def enospc(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def full_disk_for(monkeypatch, matches, nth: int = 1) -> dict:
    """From the ``nth`` write of a path for which ``matches(path)`` is true on, every write through
    Zarr's local store, fsspec's local files or `common.atomic` fails with ENOSPC (half the bytes of a
    file are written first, as a disk filling up would). Returns the counts seen."""
    seen = {"matched": 0, "failed": []}

    def full(path) -> bool:
        if matches(str(path)):
            seen["matched"] += 1
            if seen["matched"] >= nth:
                seen["failed"].append(str(path))
                return True
        return False

    put = zarr_local._put

    def failing_put(path, value, exclusive=False):
        if full(path):
            raise enospc(path)
        return put(path, value, exclusive=exclusive)

    write = fsspec_local.LocalFileOpener.write

    def failing_write(self, data, *args, **kwargs):
        if full(self.path):
            write(self, bytes(data)[: len(data) // 2])
            raise enospc(self.path)
        return write(self, data, *args, **kwargs)

    def failing_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if "w" in mode and full(path):
            real_write = handle.write

            def half_then_fail(data):
                real_write(bytes(data)[: len(data) // 2])
                raise enospc(path)
            handle.write = half_then_fail
        return handle

    monkeypatch.setattr(zarr_local, "_put", failing_put)
    monkeypatch.setattr(fsspec_local.LocalFileOpener, "write", failing_write)
    monkeypatch.setattr(atomic, "open", failing_open, raising=False)
    return seen


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- extraction -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("full") / "demo", n_per_split={"train": 3, "dev": 2, "eval": 2},
                                seed=10)


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    extract(extract_config(corpus, out, unit_size=2), log=lambda _: None)
    return out


def extract_cli(corpus: Path, out: Path):
    return cli("extract", "--dataset", "asv19", "--root", corpus, "--out", out, "--workers", "0", *SMALL_CODEC,
               "--set", "unit_size=2")


@pytest.mark.parametrize("where, matches", [
    ("a unit's latent, after its codes", lambda p: "parts/u000002/latent/" in p),
    ("the final codes array", lambda p: "/codes/c/" in p and "/parts/" not in p),
    ("utterances.parquet", lambda p: p.endswith("utterances.parquet.tmp")),
])
def test_extraction_stops_cleanly_and_resumes(corpus, clean, tmp_path, monkeypatch, where, matches):
    out = tmp_path / "s.zarr"
    seen = full_disk_for(monkeypatch, matches)
    result = extract_cli(corpus, out)
    assert seen["failed"], f"no write matched {where}"
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("Error: "))
    assert line.startswith("Error: extraction stopped: ") and "no space left on the device" in line and "GB free now" in line
    assert "run the same command again" in line and seen["failed"][0] in line
    assert state(out) == "extracting" and not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))
    committed = [p.parent.name for p in (out / "parts").glob("u*/zarr.json") if "records" in p.read_text()]
    monkeypatch.undo()  # space again
    resumed = extract_cli(corpus, out)
    assert resumed.exit_code == 0, resumed.output
    assert f"{len(committed)} already done" in resumed.output  # the units committed before the disk filled
    assert_same_store(out, clean)


# -- training and sweeps ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return synthetic_store(str(tmp_path_factory.mktemp("train") / "s.zarr"), n_per_split=16, latent=False)


def train_cli(store: str, run: Path):
    return cli("train", "--features", store, "--out", run, "--epochs", "3", *TRAIN_SETTINGS)


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_one(store, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    assert train_cli(store, whole).exit_code == 0
    run = tmp_path / "run"
    seen = full_disk_for(monkeypatch, lambda p: p.endswith("last.pt.tmp"), nth=2)  # epoch 2's last.pt
    result = train_cli(store, run)
    assert seen["failed"] and result.exit_code == 1 and "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("Error: "))
    assert line.startswith(f"Error: training stopped: {run / 'last.pt.tmp'}: no space left on the device")
    assert f"it resumes from {run / 'last.pt'}" in line
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not list(run.glob("*.tmp"))
    monkeypatch.undo()
    assert train_cli(store, run).exit_code == 0
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(whole / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]) and a["epoch"] == 3


SWEEP = sweep_toml(epochs=1, seeds=[0])


def test_a_full_disk_while_writing_results_keeps_the_finished_trials(store, tmp_path, monkeypatch):
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP)
    out = tmp_path / "out"
    seen = full_disk_for(monkeypatch, lambda p: p.endswith("results.parquet.tmp"), nth=2)
    result = cli("sweep", "--features", store, "--config", config, "--out", out, "--workers", "0")
    assert seen["failed"] and result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: sweep stopped: " in result.output and "no space left on the device" in result.output
    first = read_results(out)
    assert len(first) == 1 and (first["status"] == "ok").all() and not list(out.glob("*.tmp"))
    monkeypatch.undo()
    again = cli("sweep", "--features", store, "--config", config, "--out", out, "--workers", "0")
    assert again.exit_code == 0, again.output
    assert "1 trial(s) run, 1 already done" in again.output
    final = read_results(out)
    assert len(final) == 2 and final.set_index("trial_id").loc[first["trial_id"].iloc[0], "finished_at"] == first["finished_at"].iloc[0]

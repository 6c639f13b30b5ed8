"""Fixtures for the extraction tests: a tiny generated corpus and an untrained-codec store of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from extract.datasets import generate_demo_corpus
from extract.run import ExtractConfig, extract
from extract.unit import run_unit

TINY = {"train": 6, "dev": 4, "eval": 4}


def tiny_config(root: Path, out: Path, **overrides) -> ExtractConfig:
    """An untrained-codec extraction small enough for unit tests (LSUV on 4 s; k-means: 3000 frames, 5 iterations)."""
    values = dict(dataset="asv19", root=str(root), out=str(out), weights="untrained", kmeans_frames=3000, kmeans_iters=5, lsuv_seconds=4, unit_size=4, device="cpu", torch_threads=1)
    values.update(overrides)
    return ExtractConfig(**values)


def quiet(_message: str) -> None:
    pass


class Killed(Exception):
    """Raised by :func:`dies_after`'s submit: the run is "killed" after its first units."""


def dies_after(n: int):
    """A ``submit`` for `extract` that runs the first ``n`` units in order, then raises Killed."""
    def submit(tasks):
        for task in tasks[:n]:
            yield run_unit(task)
        raise Killed
    return submit


def counting(ran: list):
    """A ``submit`` for `extract` that runs every unit and appends each unit's number to ``ran``."""
    def submit(tasks):
        ran.extend(t.unit for t in tasks)
        return map(run_unit, tasks)
    return submit


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("corpus") / "demo", n_per_split=TINY, seed=3)


@pytest.fixture(scope="session")
def tiny_store(tiny_corpus, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    extract(tiny_config(tiny_corpus, out), log=quiet)
    return str(out)

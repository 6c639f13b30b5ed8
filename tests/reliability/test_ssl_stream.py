"""The SSL stream (`extract --ssl`) under the same guarantees as the codec's streams.

Its units are fenced by the store's lease like the codec's (a worker of a run whose lease was taken
over writes nothing); a damaged chunk of it is named with its utterances by `verify`, which says how
to repair it (remove the stream's group, add it again: `--repair` re-extracts only the codec's
streams and refuses, writing nothing); the stream added again equals the original.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.lease import Lease, LeaseLost
from extract.datasets import generate_demo_corpus
from extract.repair import RepairError, repair_store
from extract.run import ExtractConfig, extract
from extract.unit import UnitTask, run_unit
from store.reader import FeatureStore
from store.verify import verify_store

from .helpers import extract_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(corpus: Path, out: Path, **ssl) -> ExtractConfig:
    return extract_config(corpus, out, unit_size=2, **ssl)


SSL = dict(ssl="wavlm-tiny", ssl_weights="untrained")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("ssl") / "demo", n_per_split={"train": 2, "dev": 2, "eval": 2},
                                seed=11)


@pytest.fixture(scope="module")
def original(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    extract(config(corpus, out, **SSL), log=lambda _: None)
    assert verify_store(str(out)).ok
    return out


@pytest.fixture
def store(original, tmp_path) -> Path:
    return Path(shutil.copytree(original, tmp_path / "s.zarr"))


def test_a_worker_of_a_run_whose_lease_was_taken_over_writes_nothing(corpus, tmp_path):
    out = tmp_path / "s.zarr"
    extract(config(corpus, out), log=lambda _: None)  # the codec's streams only
    seen: list[UnitTask] = []

    def capture(tasks):
        seen.extend(tasks)
        raise KeyboardInterrupt  # the run stops before any unit runs

    with pytest.raises(KeyboardInterrupt):
        extract(config(corpus, out, **SSL), capture, log=lambda _: None)
    task = seen[0]
    assert task.settings.lease  # the units carry the run's lease token
    with Lease(str(out), "store", log=lambda _: None):  # the next run holds the store now
        with pytest.raises(LeaseLost, match="no longer held"):
            run_unit(task)
        assert not list((out / "streams/ssl/parts").glob("u*"))
        fresh = dataclasses.replace(task, settings=dataclasses.replace(task.settings, lease=None))
        run_unit(fresh)  # (the same unit without a token: written)
        assert list((out / "streams/ssl/parts").glob("u*"))


def test_a_damaged_ssl_chunk_is_named_refused_by_repair_and_readded(store, original, corpus):
    chunk = next(p for p in sorted((store / "streams/ssl/data/c").rglob("*")) if p.is_file())
    chunk.unlink()
    key = chunk.relative_to(store).as_posix()
    report = verify_store(str(store))
    assert not report.ok and [a.stream for a in report.affected] == ["ssl"]
    assert any(key in p and "missing" in p for p in report.problems)
    hint = report.repair_hint()
    assert f"remove {store}/streams/ssl" in hint and "--ssl" in hint and "--repair" not in hint
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    with pytest.raises(RepairError, match="codec's streams only"):
        repair_store(str(store), log=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == before
    # the repair the hint names: the stream added anew equals the original, nothing else changed
    shutil.rmtree(store / "streams/ssl")
    extract(config(corpus, store, **SSL), log=lambda _: None)
    a, b = FeatureStore(str(store)).stream("ssl"), FeatureStore(str(original)).stream("ssl")
    assert np.array_equal(a.data[...], b.data[...]) and np.array_equal(a.offsets, b.offsets)
    assert verify_store(str(store)).ok

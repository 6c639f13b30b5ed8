"""kill -9 of `pipeline extract` at many points of a run, re-running after each: the final store equals
an uninterrupted run's, and every state a kill leaves is consistent.

Kill points are of two kinds: a SIGKILL sent from outside once the run has committed some more work
units (or some seconds into the run), and the writer's fault points (`common.faults`), where the
process kills itself at the most delicate instants (creation before its attributes, a unit's data
written but not its commit, the final arrays half written, the store marked complete but its parts
not yet removed ...). With dask workers a fault point inside a unit kills the worker that runs it
(once), which dask restarts and retries: the "worker killed mid-unit" case.

The slow loops run every point, with 1 and 2 workers; the fast case kills twice. RELIABILITY.md
records the loops' last results.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from extract.datasets import generate_demo_corpus
from extract.run import extract
from store import format as sf
from store.reader import FeatureStore
from store.verify import verify_store

from .helpers import (
    assert_same_store,
    check_consistent,
    committed_units,
    extract_args,
    extract_config,
    run_pipeline,
    state,
)

SIZES = {"train": 3, "dev": 2, "eval": 2}
LOOP_SIZES = {"train": 8, "dev": 4, "eval": 4}


def reference(corpus: Path, out: Path, **overrides) -> Path:
    """An uninterrupted extraction in this process, with the settings of :func:`extract_args`."""
    extract(extract_config(corpus, out, **overrides), log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("kills") / "demo", n_per_split=SIZES, seed=5)


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> Path:
    return reference(corpus, tmp_path_factory.mktemp("clean") / "clean.zarr")


@pytest.fixture(scope="module")
def loop_corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("loop") / "demo", n_per_split=LOOP_SIZES, seed=6)


@pytest.fixture(scope="module")
def loop_clean(loop_corpus, tmp_path_factory) -> Path:
    return reference(loop_corpus, tmp_path_factory.mktemp("clean") / "clean.zarr")


def after_units(store: Path, n: int, group: str = ""):
    """Kill once ``n`` more units than now are committed."""
    base = {}

    def when(_elapsed: float) -> bool:
        count = committed_units(store, group)
        base.setdefault("n", count)
        return count >= base["n"] + n
    return when


def lease_token(store: Path) -> str | None:
    try:
        return json.loads((store / "lock.json").read_text()).get("token")
    except (OSError, ValueError):
        return None


def after_seconds_of_work(store: Path, seconds: float):
    """Kill ``seconds`` after the run took the store's lease (a new token in lock.json), at whatever
    it is doing then."""
    start = {}

    def when(elapsed: float) -> bool:
        token = lease_token(store)
        start.setdefault("old", token)
        if "t" not in start and token is not None and token != start["old"] and (store / sf.PLAN).exists():
            start["t"] = elapsed
        return "t" in start and elapsed - start["t"] >= seconds
    return when


def kill_plan(store: Path, workers: int) -> list[tuple[str, dict]]:
    """(label, run_pipeline keywords) of each kill, in order along one store's life. A fault point
    inside a unit kills the process that runs the unit: the run itself without workers; with dask
    workers, the worker (once: dask restarts it and retries the unit), then the run is killed from
    outside once 2 more units are committed."""
    def inside_unit(fault: str) -> dict:
        return {"fault": fault, "kill_when": after_units(store, 2), "worker_fault": True} if workers else {"fault": fault}

    return [
        ("fault create:before-attributes", {"fault": "create:before-attributes"}),
        ("SIGKILL after 1 unit committed", {"kill_when": after_units(store, 1)}),
        ("fault part:before-records (data written, no commit)", inside_unit("part:before-records@2")),
        ("SIGKILL after 2 more units", {"kill_when": after_units(store, 2)}),
        ("fault part:between-arrays (codes written, not the latent)", inside_unit("part:between-arrays@1")),
        ("SIGKILL 3 s into its work", {"kill_when": after_seconds_of_work(store, 3.0)}),
        ("SIGKILL after 2 more units", {"kill_when": after_units(store, 2)}),
        ("fault finish:after-stream-array (final arrays half written)", {"fault": "finish:after-stream-array@2"}),
        ("fault finish:after-failures-table", {"fault": "finish:after-failures-table"}),
        ("fault finish:before-complete (tables written, state not)", {"fault": "finish:before-complete"}),
        ("fault finish:after-complete (parts not removed)", {"fault": "finish:after-complete"}),
    ]  # (the next point, finish:after-parts-removed, cannot follow in the same chain: the store is complete now)


def kill_loop(corpus: Path, store: Path, workers: int, plan: list[tuple[str, dict]], logs: Path) -> list[dict]:
    """Run the extraction once per kill in ``plan`` (each run resumes what the previous left), then
    once to the end. Returns one record per run: how many processes were killed (the run, a worker),
    its exit status and seconds, the store's state and committed units before and after."""
    records = []
    for k, (label, kill) in enumerate(plan):
        before = (state(store), committed_units(store))
        kill = dict(kill)
        once = logs / f"fault-{k}.once" if kill.pop("worker_fault", False) else None
        outcome = run_pipeline(extract_args(corpus, store, workers), logs, orphans_grace=3.0, once=once, **kill)
        check_consistent(store)
        kills = int(outcome.killed) + int(once is not None and once.exists())
        planned = 1 + int(once is not None)  # the run (killed from outside or by its fault point), and a worker
        records.append({"kill": label, "kills": kills, "planned": planned, "returncode": outcome.returncode,
                        "seconds": round(outcome.seconds, 1), "before": before,
                        "after": (state(store), committed_units(store))})
        # (a killed run's orphaned dask workers may print tracebacks as they find their scheduler gone)
        assert outcome.killed or (outcome.returncode == 0 and "Traceback" not in outcome.stderr), outcome.stderr[-3000:]
    final = run_pipeline(extract_args(corpus, store, workers), logs)
    records.append({"kill": "none (final run)", "kills": 0, "planned": 0, "returncode": final.returncode,
                    "seconds": round(final.seconds, 1)})
    assert final.returncode == 0, final.stderr[-3000:]
    return records


def report(records: list[dict], workers: int, started: float) -> None:
    kills = sum(r["kills"] for r in records)
    print(f"\nextract kill loop, {workers} worker(s): {kills} kills in {len(records)} runs, {time.monotonic() - started:.0f} s")
    for r in records:
        print(f"  {r}")


def test_three_kills_then_resume_equals_an_uninterrupted_run(corpus, clean, tmp_path):
    """The fast case: killed while creating the store (before its attributes), with a unit's data
    written but not committed, and while writing the final arrays."""
    store = tmp_path / "killed.zarr"
    plan = [("fault create:before-attributes", {"fault": "create:before-attributes"}),
            ("fault part:before-records", {"fault": "part:before-records@3"}),
            ("fault finish:after-stream-array", {"fault": "finish:after-stream-array"})]
    records = kill_loop(corpus, store, 0, plan, tmp_path / "logs")
    assert [r["kills"] for r in records] == [1, 1, 1, 0]
    assert records[0]["after"] == (None, 0)  # an unfinished creation, made again by the next run
    assert records[1]["after"] == (sf.STATE_EXTRACTING, 2)  # two committed, the third's data left uncommitted
    assert records[2]["after"][0] == sf.STATE_EXTRACTING  # killed while writing the final arrays
    assert_same_store(store, clean)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_loop(loop_corpus, loop_clean, tmp_path, workers):
    started = time.monotonic()
    store = tmp_path / "loop.zarr"
    records = kill_loop(loop_corpus, store, workers, kill_plan(store, workers), tmp_path / "logs")
    report(records, workers, started)
    assert sum(r["kills"] for r in records) >= 10
    missed = [r["kill"] for r in records if r["kills"] != r["planned"]]
    assert not missed, f"planned kills that did not fire: {missed}"
    assert sum(r["kills"] for r in records) == len(kill_plan(store, workers)) + 2 * bool(workers)  # 11, or 13 with workers
    assert_same_store(store, loop_clean)


@pytest.mark.slow
@pytest.mark.soak
def test_kill_loop_while_adding_a_stream(corpus, clean, tmp_path):
    """The same for a stream added to a finished store (its own parts and commit records)."""
    started = time.monotonic()
    store = reference(corpus, tmp_path / "late.zarr", energy=False)  # a store made without the energy stream
    plan = [("SIGKILL after 2 units of the stream", {"kill_when": after_units(store, 2, "streams/energy")}),
            ("fault part:before-records", {"fault": "part:before-records@2"}),
            ("fault stream:before-complete", {"fault": "stream:before-complete"})]
    records = kill_loop(corpus, store, 0, plan, tmp_path / "logs")
    report(records, 0, started)
    assert sum(r["kills"] for r in records) == 3 and all(r["kills"] == r["planned"] for r in records)
    got, expected = FeatureStore(str(store)).stream("energy"), FeatureStore(str(clean)).stream("energy")
    assert got.spec.array == "streams/energy/data"
    assert np.array_equal(got.data[...], expected.data[...]) and np.array_equal(got.offsets, expected.offsets)
    assert verify_store(str(store)).ok

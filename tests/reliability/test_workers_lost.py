"""A local cluster whose every worker is gone (killed and not restarted by its nanny) stops the run
with a clear error instead of leaving it waiting forever (`pipeline.cluster.as_finished`).

Seen in the extraction kill loop on an overloaded machine: a worker killed mid-unit was never
restarted, and `extract` waited on its futures with no worker left. The committed units are kept,
so the same command resumes (the kill tests show that).
"""

from __future__ import annotations

import threading
import time

import pytest
from distributed import Client, LocalCluster

from pipeline.cluster import WorkersLost, as_finished


def slow(x: int) -> int:
    time.sleep(0.05 if x < 2 else 30)
    return x


pytestmark = pytest.mark.timeout(120)  # a hang here is the defect under test: fail, never block CI


@pytest.fixture
def cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        yield c


def test_finished_futures_are_yielded_while_workers_live(client):
    futures = client.map(slow, [0, 1], pure=False)
    assert sorted(value for _, value in as_finished(client, futures, no_worker_seconds=1.0, poll=0.02)) == [0, 1]


def test_no_worker_left_stops_the_wait_with_a_clear_error(cluster, client):
    futures = client.map(slow, [0, 5], pure=False)  # the second runs for 30 s
    seen: list[int] = []
    started = time.monotonic()

    def close_when_the_first_is_done() -> None:  # the worker gone mid-task, as a killed one not restarted
        futures[0].result()
        for worker in list(cluster.workers.values()):
            cluster.sync(worker.close, executor_wait=False)

    threading.Thread(target=close_when_the_first_is_done, daemon=True).start()
    with pytest.raises(WorkersLost, match="no dask worker has been alive for"):
        for _, value in as_finished(client, futures, no_worker_seconds=1.0, poll=0.02, fetch_seconds=1.0):
            seen.append(value)
    # the first result is yielded, or lost with the worker before it was fetched (then it waits like
    # the second): never a wait forever on a lost result
    assert seen in ([0], []) and time.monotonic() - started < 25  # long before the pending task could end


def raises(x: int) -> int:
    raise ValueError(f"task {x} failed")


def test_a_task_error_is_handed_over_as_its_result(client):
    futures = client.map(raises, [3], pure=False)
    [(future, value)] = list(as_finished(client, futures, no_worker_seconds=1.0, poll=0.02))
    assert future is futures[0] and isinstance(value, ValueError) and str(value) == "task 3 failed"

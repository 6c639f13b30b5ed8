"""dask.distributed set-up shared by `extract` and `sweep`: a LocalCluster, or a running scheduler."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from distributed import Client, Future, LocalCluster, as_completed

NO_WORKER_SECONDS = 120.0
"""How long a local cluster may have no worker at all while work is pending before the run stops."""


class WorkersLost(RuntimeError):
    """Every worker of the local cluster is gone and none came back: the work pending cannot finish."""


def threads_per_worker(workers: int) -> int:
    """torch threads for each worker so that workers together do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Client]:
    """A client to ``scheduler`` if given, else to a new LocalCluster of ``workers`` processes, each
    allowed :func:`threads_per_worker` OpenMP/MKL threads (dask's default for worker processes is 1)
    and glibc's default memory trimming."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env={
            **{name: str(threads_per_worker(workers)) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            # dask's nanny sets 65536, which makes glibc return every large tensor to the OS and
            # page-fault it back: 2x slower encoding (bench/RESULTS_extract.md)
            "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
        },
    ) as cluster, Client(cluster) as client:
        yield client


def as_finished(client: Client, futures: Iterable[Future], no_worker_seconds: float | None = NO_WORKER_SECONDS,
                poll: float = 0.2) -> Iterator[Future]:
    """The futures as they finish (``distributed.as_completed``), but WorkersLost when the cluster has
    had no worker at all for ``no_worker_seconds`` while some are pending: a worker killed whose
    nanny did not bring it back (seen on a machine overloaded enough that the restart failed) would
    otherwise leave the run waiting forever. None waits forever (an external scheduler, whose workers
    may come and go)."""
    pending = as_completed(futures)
    checked = time.monotonic()
    without: float | None = None
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        if batch:
            without = None
            yield from batch
            continue
        now = time.monotonic()
        if no_worker_seconds is not None and now - checked >= min(5.0, no_worker_seconds / 4):
            checked = now
            if client.scheduler_info(n_workers=1)["workers"]:
                without = None
            elif without is None:
                without = now
            elif now - without >= no_worker_seconds:
                raise WorkersLost(f"no dask worker has been alive for {now - without:.0f} s (killed, out of memory, or "
                                  "not restarted) while work was pending")
        time.sleep(poll)

"""dask.distributed set-up shared by `extract` and `sweep`: a LocalCluster, or a running scheduler."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster


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

"""dask.distributed set-up shared by `extract` and `sweep`: a LocalCluster, or a running scheduler."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster


LOCAL_CONFIG = {
    # dask's nanny sets MALLOC_TRIM_THRESHOLD_ (65536) in its workers. Setting ANY of glibc's malloc
    # thresholds switches off its adaptive mmap threshold: every tensor over 128 KiB is then mmap-ed
    # and page-faulted afresh, 2x the CPU time of the encoder (bench/RESULTS_extract.md). Unset it.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # Idle, a default LocalCluster of one worker keeps ~12 % of a core busy: the worker samples its
    # threads' stacks every 10 ms for the dashboard's profile, and every process wakes every 20 ms
    # to check its event loop. Our tasks run for seconds: no profiler, and slower ticks (idle: ~2 %).
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
"""dask settings of the LocalClusters this tool starts (a running ``--scheduler``'s are its owner's)."""


def threads_per_worker(workers: int) -> int:
    """torch threads for each worker so that workers together do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class GPUCluster(LocalCluster):
    """A LocalCluster whose worker ``i`` sees only GPU ``i`` (``CUDA_VISIBLE_DEVICES``, set before the
    worker process starts; a restarted worker keeps its GPU), so that device ``cuda`` is a different
    GPU in each worker. ``devices``: the host's GPU ids (default ``0 .. workers - 1``)."""

    def __init__(self, n_workers: int, devices: list[str] | None = None, **kwargs):
        self._devices = devices or [str(i) for i in range(n_workers)]
        super().__init__(n_workers=0, **kwargs)
        self.scale(n_workers)

    def new_worker_spec(self) -> dict:
        ((name, spec),) = super().new_worker_spec().items()
        options = dict(spec["options"])
        device = self._devices[int(name) % len(self._devices)]
        options["env"] = {**options.get("env", {}), "CUDA_VISIBLE_DEVICES": device}
        return {name: {**spec, "options": options}}


@contextmanager
def dask_client(workers: int, scheduler: str | None, gpus: bool = False) -> Iterator[Client]:
    """A client to ``scheduler`` if given, else to a new LocalCluster of ``workers`` processes, each
    allowed :func:`threads_per_worker` OpenMP/MKL threads (dask's default for worker processes is 1)
    and glibc's own memory management (see below); with ``gpus``, one GPU per worker (:class:`GPUCluster`)."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    env = {name: str(threads_per_worker(workers)) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    options = dict(threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR, env=env)
    with dask.config.set(LOCAL_CONFIG):  # for as long as the cluster may start or restart workers
        cluster = GPUCluster(workers, **options) if gpus else LocalCluster(n_workers=workers, **options)
        with cluster, Client(cluster) as client:
            client.wait_for_workers(workers)
            yield client


@contextmanager
def background_client(workers: int, scheduler: str | None, gpus: bool = False,
                      warm: Callable[[], object] | None = None) -> Iterator[Callable[[], Client]]:
    """:func:`dask_client` started on a helper thread, so that this process prepares its work while
    the cluster starts. Yields a function that waits for the client and returns it. ``warm`` runs
    once on each worker as soon as the cluster is up (e.g. importing torch and the codec before the
    first task arrives). The cluster lives on the helper thread (a Client is entered and left in
    one thread) and is closed on exit."""
    started: Future = Future()
    closing = threading.Event()

    def run() -> None:
        try:
            with dask_client(workers, scheduler, gpus) as client:
                warming = [client.submit(warm, workers=[address], allow_other_workers=False, pure=False)
                           for address in client.scheduler_info()["workers"]] if warm is not None else []
                started.set_result(client)
                closing.wait()
                del warming
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            if not started.done():
                started.set_exception(err)
            else:
                raise

    thread = threading.Thread(target=run, name="dask-cluster", daemon=True)
    thread.start()
    try:
        yield started.result
    finally:
        closing.set()
        thread.join()

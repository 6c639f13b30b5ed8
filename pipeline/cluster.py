"""dask.distributed set-up shared by `extract` and `sweep`: a LocalCluster, or a running scheduler."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import dask
from distributed import Client, LocalCluster, as_completed
from distributed import Future as DaskFuture

NO_WORKER_SECONDS = 120.0
"""How long a local cluster may have no worker at all while work is pending before the run stops."""


class WorkersLost(RuntimeError):
    """Every worker of the local cluster is gone and none came back: the work pending cannot finish."""


LOCAL_CONFIG = {
    # dask's nanny sets MALLOC_TRIM_THRESHOLD_ (65536) in its workers. Setting ANY of glibc's malloc
    # thresholds switches off its adaptive mmap threshold: every tensor over 128 KiB is then mmap-ed
    # and page-faulted afresh, 2x the CPU time of the encoder (bench/RESULTS_extract.md). Unset it.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # A worker runs its tasks in a thread, and glibc gives each thread its own arena, whose heaps are at
    # most 64 MB: a larger block (an SSL training batch: ~157 MB) is mmap-ed and faulted afresh at every
    # step whatever the thresholds (`common.malloc`). One arena serves every thread from the main heap,
    # where the raised thresholds keep such blocks for reuse (an SSL sweep: 41 % of its CPU in system
    # time before, BENCHMARKS.md section 18). This variable does not switch off the adaptive threshold.
    "distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX": "1",
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


def as_finished(client: Client, futures: Iterable[DaskFuture], no_worker_seconds: float | None = NO_WORKER_SECONDS,
                poll: float = 0.2, fetch_seconds: float = 10.0) -> Iterator[tuple[DaskFuture, Any]]:
    """``(future, result)`` as the futures finish (``distributed.as_completed``), the result already
    fetched; a task that raised gives its exception as the result. WorkersLost when the cluster has
    had no worker at all for ``no_worker_seconds`` while some are pending: a worker killed whose
    nanny did not bring it back (seen on a machine overloaded enough that the restart failed) would
    otherwise leave the run waiting forever. None waits forever (an external scheduler, whose workers
    may come and go).

    A result lives on its worker until fetched: when the worker dies first, the finished future is
    lost and ``future.result()`` would wait for it forever. So the result is fetched here, with a
    timeout, and a future whose result cannot be fetched goes back to waiting (recomputed on another
    worker, or WorkersLost when none is left)."""
    pending = as_completed(futures)
    checked = time.monotonic()
    without: float | None = None
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        for future in batch:
            try:
                value = future.result(timeout=fetch_seconds)
            except TimeoutError:  # lost with its worker: wait for it again
                pending.add(future)
                continue
            except Exception as err:  # noqa: BLE001 - the task's own error, handed to the caller
                value = err
            without = None
            yield future, value
        if batch:
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

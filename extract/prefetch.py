"""A bounded, ordered prefetch of jobs run on helper threads (decoding audio ahead of the encoder).

The helper threads run torch with ONE intra-op thread each. torch's thread count is per calling
thread under OpenMP: a decode thread left at the default would bring its own team of ``cores``
OpenMP threads, which on a machine whose cores the encoder already uses means twice as many busy
threads as cores (spinning at every barrier). The thread that consumes the results keeps its own
count (:func:`keep_threads` pins it before the helpers start).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")


def _one_torch_thread() -> None:
    torch.set_num_threads(1)


@contextmanager
def keep_threads(threads: int | None = None) -> Iterator[int]:
    """Pin this thread's torch intra-op thread count (``threads``, or its current count) so that
    helper threads setting theirs to 1 cannot change it; restore the process default on exit.
    (``torch.set_num_threads`` sets the calling thread's OpenMP team size, and the default that
    threads created later start with.)"""
    count = threads or torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(count)


def prefetch(jobs: Iterable[tuple[Callable[[], T], int]], threads: int = 1, depth: int = 2,
             max_cost: int | None = None) -> Iterator[T]:
    """Run ``jobs`` ((function, cost) pairs) on ``threads`` helper threads and yield their results
    in order. At most ``depth`` jobs are in flight or waiting to be consumed, and no new job starts
    while those hold ``max_cost`` or more (the first always starts): with cost = decoded samples,
    memory stays bounded whatever the files. The ``jobs`` iterable is advanced in the consuming
    thread. A job's exception is raised when its result is reached."""
    source = iter(jobs)
    pending: deque[tuple[Future, int]] = deque()
    held = 0
    with ThreadPoolExecutor(max_workers=max(1, threads), initializer=_one_torch_thread,
                            thread_name_prefix="prefetch") as pool:
        try:
            def fill() -> None:
                nonlocal held
                while len(pending) < max(1, depth) and (not pending or max_cost is None or held < max_cost):
                    job = next(source, None)
                    if job is None:
                        return
                    fn, cost = job
                    pending.append((pool.submit(fn), cost))
                    held += cost

            fill()
            while pending:
                future, cost = pending.popleft()
                result = future.result()
                held -= cost
                fill()  # the helpers go on while the consumer works on this result
                yield result
        finally:
            for future, _ in pending:
                future.cancel()

"""glibc's malloc thresholds for large, short-lived blocks: the encoder's activations, and the SSL
frames of training batches.

glibc serves a request above its mmap threshold with a fresh mapping and unmaps it when freed; the
threshold adapts to freed sizes, but only up to 32 MB. A 60 s encoder window (a file longer than the
batch budget) makes activations of about 184 MB per layer, so each is mapped, faulted in page by page
and unmapped again at every layer: measured on a 3-minute file, 6.8 M minor page faults and as much
system time as half the user time (BENCHMARKS.md section 1). Raising the mmap and trim thresholds
keeps such blocks in the heap for reuse, at the price of keeping up to the peak's memory mapped (it
is reused, not returned, between windows). Set here, when the encoder is built: 1.75 M faults and
a quarter of the system time on that file (peak RSS 1.89 -> 2.34 GB); set in the environment before
the process starts (so that allocations made earlier follow them too): 0.54 M faults.

Training on SSL frames is the same pattern: a batch of 32 crops of 4 s of 12 x 1024 float16 layers
is 157 MB, read (and, from a stream larger than ``ssl_kwargs.ram_mb``, decompressed chunk by chunk)
into fresh blocks, then the model's activations of the same size, every step. A 2-epoch `train
--variant ssl` from a lazily read stream spent 21 % of its CPU in system time with 3.2 M minor
faults before `classify.sources` set the thresholds (bench/results/ssl_io.json).

In a thread other than the main one (a dask worker's task) glibc allocates from that thread's own
arena, whose heaps hold at most 64 MB: larger blocks are mmap-ed whatever the thresholds. The
LocalClusters this tool starts give their workers ``MALLOC_ARENA_MAX=1`` (`pipeline.cluster`), so that
every thread allocates from the main heap; workers of a cluster you start yourself need it in their
environment too (README, "A dask cluster").

The setting is process-wide. It is skipped when the user set either threshold in the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), and is a no-op outside glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30
"""1 GiB: above any activation of the encoder at the default window and batch budgets."""

_done = False


def keep_large_blocks(threshold: int = THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold`` bytes, once per process. True when set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ \
            or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _done = bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))
    return _done

"""The LocalCluster set-up: glibc's adaptive malloc in every worker, one GPU per worker on CUDA,
workers warmed up while this process prepares."""

from __future__ import annotations

import os
import sys
import time

from extract.unit import warm_up
from pipeline.cluster import background_client, threads_per_worker


def test_gpu_workers_each_see_their_own_device_no_malloc_threshold_and_are_warmed_up():
    """Worker i gets CUDA_VISIBLE_DEVICES=i (set before it starts, so CUDA sees only that GPU);
    no worker gets dask's MALLOC_TRIM_THRESHOLD_, which would turn off glibc's adaptive mmap
    threshold; every worker imports the extraction code (torch, the codec) before any task.
    Runs on CPUs: only the workers' environments and modules are looked at."""
    names = ("CUDA_VISIBLE_DEVICES", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
    with background_client(2, None, gpus=True, warm=warm_up) as get_client:
        client = get_client()
        seen = client.run(lambda: {n: os.environ.get(n) for n in names})
        by_name = {info["name"]: seen[address] for address, info in client.scheduler_info()["workers"].items()}
        deadline = time.time() + 120
        while not all((warmed := client.run(lambda: "extract.unit" in sys.modules)).values()) and time.time() < deadline:
            time.sleep(0.2)
    assert sorted(by_name) == [0, 1]
    for name, env in by_name.items():
        assert env["CUDA_VISIBLE_DEVICES"] == str(name)
        assert env["MALLOC_TRIM_THRESHOLD_"] is None
        assert env["OMP_NUM_THREADS"] == str(threads_per_worker(2))
    assert list(warmed.values()) == [True, True]

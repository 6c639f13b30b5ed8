"""The LocalCluster set-up: glibc's adaptive malloc in every worker, one GPU per worker on CUDA."""

from __future__ import annotations

import os

from pipeline.cluster import dask_client, threads_per_worker


def test_gpu_workers_each_see_their_own_device_and_no_malloc_threshold():
    """Worker i gets CUDA_VISIBLE_DEVICES=i (set before it starts, so CUDA sees only that GPU);
    no worker gets dask's MALLOC_TRIM_THRESHOLD_, which would turn off glibc's adaptive mmap
    threshold. Runs on CPUs: only the workers' environments are looked at."""
    names = ("CUDA_VISIBLE_DEVICES", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
    with dask_client(2, None, gpus=True) as client:
        seen = client.run(lambda: {n: os.environ.get(n) for n in names})
        by_name = {info["name"]: seen[address] for address, info in client.scheduler_info()["workers"].items()}
    assert sorted(by_name) == [0, 1]
    for name, env in by_name.items():
        assert env["CUDA_VISIBLE_DEVICES"] == str(name)
        assert env["MALLOC_TRIM_THRESHOLD_"] is None
        assert env["OMP_NUM_THREADS"] == str(threads_per_worker(2))

"""Reading a store while it is written: `extract` in one process, a reader looping in another
(`inspect`, and every utterance of every finished stream): no errors, no torn reads.

The fast case extracts in-process (no workers) while the reader loops; the slow case extracts with 2
dask workers into a store made without the energy stream, so that the reader reads the finished
codes and latent while the new stream is added beside them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extract.datasets import generate_demo_corpus
from extract.run import extract
from store.reader import FeatureStore

from .helpers import ROOT, extract_args, extract_config, run_pipeline
from .read_loop import finished_digests


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("load") / "demo", n_per_split={"train": 4, "dev": 2, "eval": 2},
                                seed=9)


def read_while(run, store: Path, tmp_path: Path) -> dict:
    """Start the reader loop on ``store``, call ``run()``, stop the reader; return what it saw."""
    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    reader = subprocess.Popen([sys.executable, "-m", "tests.reliability.read_loop", str(store), str(stop), str(out)],
                              cwd=ROOT)
    try:
        run()
        time.sleep(1.0)  # a few reads of the finished store
    finally:
        stop.touch()
        reader.wait(timeout=120)
    return json.loads(out.read_text())


def test_reads_during_an_extraction(corpus, tmp_path):
    store = tmp_path / "s.zarr"
    outcome = {}

    def run():
        outcome["run"] = run_pipeline(extract_args(corpus, store, 0), tmp_path / "logs")

    seen = read_while(run, store, tmp_path)
    assert outcome["run"].returncode == 0, outcome["run"].stderr[-2000:]
    print(f"\nreads during an extraction: {seen['inspect']} inspections, {seen['finished_reads']} full reads of the "
          f"finished store, states {seen['states']}")
    assert seen["errors"] == []
    assert seen["states"][-1] == "complete" and seen["inspect"] > 10 and seen["finished_reads"] >= 1
    final = finished_digests(str(store))
    assert {name: [digest] for name, digest in final.items()} == seen["digests"]  # never torn


@pytest.mark.slow
@pytest.mark.soak
def test_reads_of_finished_streams_while_two_workers_add_one(corpus, tmp_path):
    store = tmp_path / "s.zarr"
    extract(extract_config(corpus, store, energy=False), log=lambda _: None)
    before = finished_digests(str(store))
    outcome = {}

    def run():
        outcome["run"] = run_pipeline(extract_args(corpus, store, 2), tmp_path / "logs")

    started = time.monotonic()
    seen = read_while(run, store, tmp_path)
    assert outcome["run"].returncode == 0, outcome["run"].stderr[-2000:]
    print(f"\nreads while 2 workers add a stream: {seen['finished_reads']} full reads in {time.monotonic() - started:.0f} s")
    assert seen["errors"] == []
    assert seen["finished_reads"] > 10
    for name, digest in before.items():
        assert seen["digests"][name] == [digest]  # the finished streams never changed under the reader
    assert "energy" in FeatureStore(str(store)).streams and seen["digests"]["energy"] == [finished_digests(str(store))["energy"]]

"""The unit pipeline: units come out committed and in order; an error keeps what was finished."""

from __future__ import annotations

import numpy as np
import pytest

import extract.unit as unit_module
from extract.run import extract
from extract.unit import iter_units, task_slices
from store.reader import FeatureStore
from store.writer import done_units

from .conftest import quiet, tiny_config


def test_slices_are_consecutive_runs_covering_every_task():
    tasks = list(range(37))
    for workers in (1, 2, 8):
        slices = task_slices(tasks, workers)
        assert [t for s in slices for t in s] == tasks
        assert max(len(s) for s in slices) <= 8 and len(slices) >= min(len(tasks), 4 * workers) // 2


def test_units_finished_before_an_error_are_committed_then_resumed(tiny_corpus, tiny_store, tmp_path, monkeypatch):
    """The encoder fails in the third unit: units 0 and 1 are committed (a unit's result is handed
    out only once it is committed; the ones still queued for writing when the error came are
    written, not reported), the error reaches the caller, and a re-run completes the store exactly
    as an uninterrupted run."""
    out = tmp_path / "broken.zarr"
    encode_batch = unit_module._encode_batch

    def failing(unit, batch, loaded, encoder):
        if unit.task.unit == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return encode_batch(unit, batch, loaded, encoder)

    handed_out: list[tuple[int, bool]] = []

    def submit(tasks):
        for result in iter_units(tasks):
            handed_out.append((result["unit"], result["unit"] in done_units(str(out), 4)))
            yield result

    monkeypatch.setattr(unit_module, "_encode_batch", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        extract(tiny_config(tiny_corpus, out), submit, log=quiet)
    assert handed_out[:1] == [(0, True)] and all(committed for _, committed in handed_out)
    assert sorted(done_units(str(out), 4)) == [0, 1]

    monkeypatch.setattr(unit_module, "_encode_batch", encode_batch)
    result = extract(tiny_config(tiny_corpus, out), log=quiet)
    assert result.resumed_units == 2 and result.ran_units == 2
    a, b = FeatureStore(str(out)), FeatureStore(tiny_store)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.latent[...], b.latent[...])
    assert np.array_equal(a.stream("energy").data[...], b.stream("energy").data[...])

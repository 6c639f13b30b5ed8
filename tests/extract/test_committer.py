"""The unit committer: writes in order on its own thread, reports only what is written, stops at an error."""

from __future__ import annotations

import threading

import pytest

from extract.committer import UnitCommitter
from store.writer import PartData


def part(unit: int) -> PartData:
    return PartData(unit=unit, records=[{"row": unit, "status": "ok"}], arrays={})


def test_units_are_written_in_order_off_the_calling_thread():
    written, threads = [], set()
    gate = threading.Event()

    def write(url, data, group):
        gate.wait(5)
        threads.add(threading.current_thread().name)
        written.append((url, data.unit, group))

    committer = UnitCommitter("store.zarr", "streams/x", write=write)
    committer.submit(part(0), {"unit": 0})
    assert committer.done() == []  # not written yet: nothing is reported
    gate.set()
    for unit in range(1, 5):
        committer.submit(part(unit), {"unit": unit})
    results = committer.done() + committer.close()
    assert [r["unit"] for r in results] == list(range(5))
    assert written == [("store.zarr", u, "streams/x") for u in range(5)]
    assert threads == {"unit-committer"}


def test_a_failed_write_is_raised_and_nothing_after_it_is_written():
    written = []

    def write(url, data, group):
        if data.unit == 1:
            raise OSError("disk full")
        written.append(data.unit)

    committer = UnitCommitter("s", write=write, max_pending=8)
    for unit in range(4):
        committer.submit(part(unit), {"unit": unit})
    with pytest.raises(OSError, match="disk full"):
        committer.close()
    assert written == [0]

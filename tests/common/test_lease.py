"""common.lease: one holder at a time; a dead holder's lease is taken over; a lost lease stops writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.lease import LOCK, Lease, LeaseHeld, LeaseLost, check_token, process_start

ROOT = Path(__file__).resolve().parents[2]


def write_holder(folder: Path, **fields) -> dict:
    record = {"holder": "store", "host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start(os.getpid()),
              "command": "pipeline extract ...", "started_at": "2026-01-01T00:00:00+00:00", "heartbeat": time.time(),
              "expiry_seconds": 120.0, "token": "0123456789abcdef", **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps(record))
    return record


def test_holder_is_named_and_the_lease_is_released(tmp_path):
    with Lease(str(tmp_path / "s.zarr")) as lease:
        record = json.loads((tmp_path / "s.zarr" / LOCK).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["token"] == lease.token
        with pytest.raises(LeaseHeld) as err:
            Lease(str(tmp_path / "s.zarr")).acquire()
        message = str(err.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}, started {record['started_at']}" in message
        assert "in use by another process" in message
    assert not (tmp_path / "s.zarr" / LOCK).exists()
    Lease(str(tmp_path / "s.zarr")).acquire().release()  # free again


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    folder = tmp_path / "s.zarr"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from common.lease import Lease; "
            f"Lease({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match=f"pid {holder.pid}"):
            Lease(str(folder)).acquire()
        holder.send_signal(signal.SIGKILL)
        while Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)  # killed, not reaped yet: a zombie is no holder either
        logged: list[str] = []
        started = time.monotonic()
        with Lease(str(folder), log=logged.append):
            assert time.monotonic() - started < 5  # no waiting for the expiry
        assert len(logged) == 1 and f"its process {holder.pid} on this host is gone" in logged[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path):
    # the recorded pid is alive (it is ours), but it is another process than the one that took the lease
    write_holder(tmp_path, process_start="some-other-boot:12345")
    logged: list[str] = []
    Lease(str(tmp_path), log=logged.append).acquire().release()
    assert "is gone" in logged[0]


def test_a_holder_on_another_host_is_waited_for_until_its_heartbeat_expires(tmp_path):
    write_holder(tmp_path, host="node-17", pid=4242, heartbeat=time.time() - 30)
    with pytest.raises(LeaseHeld, match=r"host node-17, pid 4242, started 2026-01-01T00:00:00\+00:00.*last heartbeat 30 s ago"):
        Lease(str(tmp_path)).acquire()
    write_holder(tmp_path, host="node-17", pid=4242, heartbeat=time.time() - 500)
    logged: list[str] = []
    with Lease(str(tmp_path), log=logged.append):
        pass
    assert "last heartbeat is 500 s old (expiry 120 s)" in logged[0]


def test_the_heartbeat_renews_the_lease(tmp_path):
    with Lease(str(tmp_path), expiry=0.4) as lease:
        first = json.loads((tmp_path / LOCK).read_text())["heartbeat"]
        time.sleep(0.5)
        later = json.loads((tmp_path / LOCK).read_text())["heartbeat"]
        assert later > first and lease.lost is None
        lease.check()
        assert Lease(str(tmp_path), expiry=0.4).stale_reason(json.loads((tmp_path / LOCK).read_text())) is None


def test_a_holder_whose_lease_was_taken_over_stops_and_its_writers_are_fenced(tmp_path):
    with Lease(str(tmp_path), expiry=0.4) as lease:
        check_token(str(tmp_path), lease.token)  # still ours
        write_holder(tmp_path, host="node-3", pid=77, token="feedfacefeedface")  # as a take-over would
        time.sleep(0.5)
        with pytest.raises(LeaseLost, match="taken over by another process.*node-3"):
            lease.check()
        with pytest.raises(LeaseLost, match="no longer held"):
            check_token(str(tmp_path), lease.token)
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "feedfacefeedface"  # not removed by the loser
    check_token(str(tmp_path), None)  # no token: nothing to check


def _contend(folder: str, barrier, results) -> None:
    barrier.wait()
    try:
        lease = Lease(folder, log=lambda _: None).acquire()
        results.put(("won", os.getpid()))
        time.sleep(1.0)  # hold it while the others try
        lease.release()
    except LeaseHeld:
        results.put(("refused", os.getpid()))


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
def test_processes_starting_at_once_get_one_lease(tmp_path, stale):
    if stale:  # all of them find the same dead holder's lease and try to take it over
        write_holder(tmp_path, host="node-9", pid=1, heartbeat=time.time() - 1000)
    context = multiprocessing.get_context("fork")
    n = 6
    barrier, results = context.Barrier(n), context.Queue()
    workers = [context.Process(target=_contend, args=(str(tmp_path), barrier, results)) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    outcomes = [results.get(timeout=5)[0] for _ in range(n)]
    assert outcomes.count("won") == 1 and outcomes.count("refused") == n - 1


def test_object_store_lease(tmp_path):
    """Through fsspec on a file system without atomic create (memory://: written, then read back)."""
    url = f"memory://leases/{tmp_path.name}/s.zarr"
    with Lease(url, settle=0.0) as lease:
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
            Lease(url, settle=0.0).acquire()
        check_token(url, lease.token)
    Lease(url, settle=0.0).acquire().release()

"""A lease: one writer at a time on a store (or a training run's or a sweep's folder), released when
its holder dies.

The lease is a small JSON file, ``lock.json``, inside the folder it guards, written through fsspec
(a local disk, a shared file system, an object store). It names its holder (host, pid, the process's
start, the command, when it was taken) and carries a heartbeat time that a thread of the holder
renews every ``expiry / 4`` seconds. Another process that finds it:

* refuses to start, naming the holder (:class:`LeaseHeld`), while the holder is alive;
* takes it over at once, with a log line, when the holder ran on this host and its process is gone
  (a kill, a crash, a reboot): a killed run is resumed without waiting;
* takes it over when the heartbeat is older than ``expiry`` seconds (a holder on another host that
  died, or lost the network). Hosts' clocks must agree within a fraction of the expiry (NTP).

The holder's heartbeat thread also checks that the file still names it; if another process took the
lease over (the holder was suspended for longer than the expiry), :meth:`Lease.check` raises
:class:`LeaseLost` at the holder's next check, and writers given the lease's token
(:func:`check_token`) refuse to write: a fencing token, so that a process that lost its lease (a
dask worker orphaned by a killed client) cannot overwrite the new holder's work.

Creating the file is atomic on local and POSIX shared file systems: the content is written to a
temporary file that is then hard-linked to ``lock.json``, which fails if the name exists, so two
processes starting at once cannot both get it. Object stores have no such operation through
fsspec: there the lease is written, then read back after ``settle`` seconds, and the process whose
token is not the one read gives way. With a strongly consistent store (S3, GCS, Azure) two
processes that start within the same ``settle`` window still resolve to one holder as long as each
write reaches the store within ``settle`` seconds of its check; the heartbeat's ownership check is
the second line of defence.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

LOCK = "lock.json"
EXPIRY = 120.0
"""Seconds without a heartbeat after which a lease is stale."""
SETTLE = 2.0
"""Seconds to wait before reading back a lease written to an object store."""


class LeaseHeld(RuntimeError):
    """Another live process holds the lease."""


class LeaseLost(RuntimeError):
    """This process's lease was taken over by another process."""


def _now() -> float:
    return time.time()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def process_start(pid: int) -> str | None:
    """An identifier of the start of process ``pid`` (Linux: its start time in clock ticks since
    boot, with the boot id), so that a reused pid is not mistaken for the holder; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{int(fields[19])}"
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host is running (not a zombie: killed, not yet reaped by its
    parent) and is the one that started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return False
    except (OSError, IndexError):
        pass
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def describe(holder: dict[str, Any], expiry: float) -> str:
    """One line naming a lease's holder: host, pid, command, since when, last heartbeat."""
    beat = holder.get("heartbeat")
    age = f"{_now() - beat:.0f} s ago" if isinstance(beat, (int, float)) else "never"
    command = f", command {holder['command']!r}" if holder.get("command") else ""
    return (f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started_at')}{command}; "
            f"last heartbeat {age} (expires after {expiry:.0f} s without one)")


class Lease:
    """The lease on the folder ``url`` (a path or fsspec URL); ``what`` names the folder in messages
    ("store", "training run", "sweep"). Use as a context manager, or :meth:`acquire` / :meth:`release`.

    ``expiry``: seconds without a heartbeat after which the lease is stale; ``log``: where the
    take-over of a stale lease is reported."""

    def __init__(self, url: str, what: str = "store", expiry: float = EXPIRY, log: Callable[[str], None] = print,
                 settle: float = SETTLE):
        self.url = str(url)
        self.what = what
        self.expiry = float(expiry)
        self.interval = self.expiry / 4
        self.log = log
        self.settle = settle
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.path = f"{self.root}/{LOCK}"
        self.local = isinstance(self.fs, LocalFileSystem)
        self.token = secrets.token_hex(8)
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: dict[str, Any] = {}
        self._made_root = False

    # -- the file -------------------------------------------------------------------------------

    def _read(self, path: str | None = None) -> dict[str, Any] | None:
        """The lease file's content; None when absent; {} when unreadable (being written, damaged)."""
        try:
            with self.fs.open(path or self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            content = json.loads(data)
        except ValueError:
            return {}
        return content if isinstance(content, dict) else {}

    def _write(self, record: dict[str, Any], exclusive: bool) -> bool:
        """Write the lease file whole; with ``exclusive``, only if there is none (returns False then)."""
        data = json.dumps(record, indent=1).encode()
        if not self.local:
            if exclusive and self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, data)
            return True
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            if exclusive:
                try:
                    os.link(tmp, self.path)  # atomic, and fails when the name exists
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True

    def _new_record(self) -> dict[str, Any]:
        now = _now()
        pid = os.getpid()
        return {"holder": self.what, "host": socket.gethostname(), "pid": pid, "process_start": process_start(pid),
                "command": " ".join(sys.argv), "started_at": _iso(now), "heartbeat": now,
                "heartbeat_at": _iso(now), "expiry_seconds": self.expiry, "token": self.token}

    def stale_reason(self, holder: dict[str, Any]) -> str | None:
        """Why the lease ``holder`` is stale (its process is gone, or its heartbeat expired), or None."""
        if not holder:
            return None
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not process_alive(holder["pid"], holder.get("process_start")):
                return f"its process {holder['pid']} on this host is gone"
        beat = holder.get("heartbeat")
        expiry = float(holder.get("expiry_seconds") or self.expiry)
        if isinstance(beat, (int, float)) and _now() - beat > expiry:
            return f"its last heartbeat is {_now() - beat:.0f} s old (expiry {expiry:.0f} s)"
        return None

    # -- taking and giving back -----------------------------------------------------------------

    def acquire(self) -> Lease:
        """Take the lease, or raise LeaseHeld naming its holder. A stale lease is taken over."""
        if self.local and not os.path.isdir(self.root):
            os.makedirs(self.root)
            self._made_root = True  # removed again on release if nothing else was put in it
        for _ in range(20):
            record = self._new_record()
            if self._write(record, exclusive=True):
                if not self.local:
                    time.sleep(self.settle)
                    back = self._read()
                    if not back or back.get("token") != self.token:
                        continue  # another process wrote after us: look again
                self._record = record
                self._start_heartbeat()
                return self
            holder = self._read()
            if holder is None:
                continue  # released meanwhile
            if not holder:  # being written right now, or damaged
                time.sleep(0.2)
                holder = self._read()
                if holder == {}:
                    raise LeaseHeld(f"{self.url} has an unreadable lease file {LOCK}: another process may be "
                                    f"taking it right now; if none is, delete {self.path}")
                continue
            reason = self.stale_reason(holder)
            if reason is None:
                raise LeaseHeld(f"{self.url}: this {self.what} is in use by another process ({describe(holder, self.expiry)}). "
                                f"Wait for it to finish, or stop it; a dead holder's lease is taken over automatically.")
            if self._break(holder):
                self.log(f"taking over the lease of {self.url} from a dead holder ({reason}): "
                         f"{describe(holder, self.expiry)}")
        raise LeaseHeld(f"{self.url}: could not take the lease {self.path} (it keeps changing hands)")

    def _break(self, stale: dict[str, Any]) -> bool:
        """Remove the stale lease ``stale``; False when it changed meanwhile (someone else took it)."""
        if not self.local:
            again = self._read()
            if again and again.get("token") == stale.get("token"):
                self.fs.rm_file(self.path)
                return True
            return False
        tomb = f"{self.path}.{self.token}.stale"
        try:
            os.rename(self.path, tomb)  # only one of several breakers moves a given file
        except FileNotFoundError:
            return False
        moved = self._read(tomb)
        if moved and moved.get("token") != stale.get("token"):  # we moved a fresh lease: put it back
            try:
                os.link(tomb, self.path)
            except FileExistsError:
                pass
            os.unlink(tomb)
            return False
        os.unlink(tomb)
        return True

    def release(self) -> None:
        """Stop the heartbeat and remove the lease file if it is still this process's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        holder = self._read()
        if holder and holder.get("token") == self.token:
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass
        if self._made_root:
            try:
                os.rmdir(self.root)  # only when empty: the command failed before writing anything
            except OSError:
                pass

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- the heartbeat ----------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.path}", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        """Renew the heartbeat now (the thread does it every ``expiry / 4`` s); LeaseLost if taken over."""
        holder = self._read()
        if not holder or holder.get("token") != self.token:
            self.lost = (f"the lease {self.path} was taken over by another process"
                         + (f" ({describe(holder, self.expiry)})" if holder else " (the file is gone)"))
            raise LeaseLost(self.lost)
        now = _now()
        self._record = {**self._record, "heartbeat": now, "heartbeat_at": _iso(now)}
        self._write(self._record, exclusive=False)

    def _beat(self) -> None:
        last_ok = _now()
        while not self._stop.wait(self.interval):
            try:
                self.renew()
                last_ok = _now()
            except LeaseLost:
                return
            except OSError as err:  # a transient error of the file system: try again, up to the expiry
                if _now() - last_ok > self.expiry:
                    self.lost = f"the lease {self.path} could not be renewed for {self.expiry:.0f} s ({err})"
                    return

    def check(self) -> None:
        """Raise LeaseLost when the heartbeat found the lease taken over (call between steps of work)."""
        if self.lost:
            raise LeaseLost(f"{self.lost}; stopping so as not to overwrite its work")


def check_token(url: str, token: str | None) -> None:
    """Raise LeaseLost unless the lease of folder ``url`` is (still) the one with ``token``: what a
    writer acting for a lease holder (a dask worker) checks before writing. None checks nothing."""
    if not token:
        return
    fs, root = fsspec.core.url_to_fs(str(url))
    path = f"{root.rstrip('/')}/{LOCK}"
    try:
        with fs.open(path, "rb") as f:
            holder = json.loads(f.read())
    except FileNotFoundError:
        holder = None
    except ValueError:
        holder = {}
    if not isinstance(holder, dict) or holder.get("token") != token:
        raise LeaseLost(f"{url}: the lease this work was started under is no longer held (now: "
                        f"{describe(holder, EXPIRY) if holder else 'no lease'}); its output is discarded")

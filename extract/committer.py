"""Writes finished work units to the store on a background thread, so the encoder never waits on
compression and storage. Units are written (and so committed) one at a time, in submission order;
at most ``max_pending`` finished units wait in memory, beyond that :meth:`submit` blocks."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from store.writer import PartData, write_part


class UnitCommitter:
    """``submit(part, result)`` queues ``part`` for :func:`store.writer.write_part`; :meth:`done`
    returns the ``result`` of every unit written since the last call, in order. A write error is
    raised by the next :meth:`submit`, :meth:`done` or :meth:`close`, and nothing after the failed
    unit is written."""

    def __init__(self, url: str, group: str = "", max_pending: int = 2,
                 write: Callable[[str, PartData, str], None] = write_part):
        self.url, self.group, self._write = url, group, write
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self._done: list[dict] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="unit-committer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            part, result = item
            if self._error is None:
                try:
                    self._write(self.url, part, self.group)
                except BaseException as err:  # noqa: BLE001 - re-raised in the submitting thread
                    self._error = err
                else:
                    with self._lock:
                        self._done.append(result)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, part: PartData, result: dict) -> None:
        self._raise()
        self._queue.put((part, result))

    def done(self) -> list[dict]:
        self._raise()
        with self._lock:
            out, self._done = self._done, []
        return out

    def close(self) -> list[dict]:
        """Write what is queued, stop the thread; return the results not yet collected."""
        self._queue.put(None)
        self._thread.join()
        with self._lock:
            out, self._done = self._done, []
        self._raise()
        return out

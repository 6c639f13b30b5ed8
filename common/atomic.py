"""Replacing a local file whole: what a kill or a full disk can never leave half written."""

from __future__ import annotations

import os
from pathlib import Path

from .faults import point


def write_atomic(path: str | Path, data: bytes, fault: str | None = None) -> Path:
    """Replace ``path`` with ``data``: written to ``PATH.tmp``, flushed to disk, renamed into place.
    Readers see the old file or the new one, never a torn one; when the write fails (a full disk)
    the old file stays as it was and the temporary one is removed. ``fault``: the name of the fault
    point (`common.faults`) between the write and the rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if fault:
            point(fault)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

"""One clear line for an operating-system error met while writing (a full disk, a quota, permissions)."""

from __future__ import annotations

import errno
import os
import shutil

FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in FULL


def _free(path: str | None) -> str:
    """`` (N GB free)`` of the file system holding ``path``, when it is a local path."""
    if not path or "://" in str(path):
        return ""
    folder = os.path.dirname(os.path.abspath(str(path)))
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return f" ({shutil.disk_usage(folder).free / 1e9:.2f} GB free now)"
    except OSError:
        return ""


def describe(err: OSError, doing: str, resume: str) -> str:
    """``"<doing> stopped: <file>: <problem> (free space); <resume>"``: ``doing`` says what was
    running ("extraction"), ``resume`` how to carry on once the cause is fixed."""
    what = FULL.get(err.errno) or err.strerror or str(err)
    where = f"{err.filename}: " if err.filename else ""
    return f"{doing} stopped: {where}{what}{_free(err.filename) if is_disk_full(err) else ''}; {resume}"

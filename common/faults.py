"""Named fault-injection points, inert unless a test asks for one through the environment.

The writers call :func:`point` at the places where a kill leaves the most delicate state (between a
unit's data and its commit record, between the final arrays and the "complete" state, while a
checkpoint is being replaced ...). ``RVQ_ANTISPOOF_FAULT=NAME`` (or ``NAME@N``: the N-th time the
point is reached in this process) makes the process SIGKILL itself there, exactly as a kill -9 at
that instant would; the reliability tests (RELIABILITY.md) use it to prove that a re-run resumes
correctly from each such point. With ``RVQ_ANTISPOOF_FAULT_ONCE=FILE`` the kill happens once over all
processes (the first to create FILE): a dask worker killed mid-unit, whose retry then succeeds.
Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "RVQ_ANTISPOOF_FAULT"
ONCE_ENV = "RVQ_ANTISPOOF_FAULT_ONCE"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Kill this process here when the environment names this point (see the module docstring)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] < int(nth or 1):
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another process has been killed there already
    os.kill(os.getpid(), signal.SIGKILL)

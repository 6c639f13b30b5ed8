"""What made a result: the record every store, checkpoint, metrics.json and sweep row carries.

    {"project": "rvq-antispoof", "version": "0.1.0",
     "git": {"commit": "3bc8233...", "dirty": false} | null,        # null outside a git checkout
     "lock": {"sha256": "...", "matches": true, "differences": []} | null,
     "command": "pipeline train --features la19.zarr ...", "device": "cuda:0 (NVIDIA H200)",
     "python": "3.12.1", "platform": "Linux-6.1-x86_64", "host": "node7", "created": "2026-12-02T12:00:00+00:00"}

``git`` and ``lock`` describe the source checkout the package was imported from (an editable
install, as the README's install makes): the commit, whether tracked files differ from it, the
sha256 of ``requirements.lock`` and whether the installed packages are exactly the lock's. A
package installed from a wheel has neither, and says so with nulls. Imports no torch.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import shlex
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT = "rvq-antispoof"
LOCK_FILE = "requirements.lock"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding the packages: a source checkout when installed editable."""


def package_version(name: str = PROJECT) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout holding this package, or None when there is none."""
    if not (SOURCE_ROOT / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def lock_differences(lock: Path) -> list[str]:
    """``"NAME installed X, lock Y"`` for each package the lock pins for this Python and platform
    whose installed version differs."""
    from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415

    differences = []
    for line in lock.read_text().splitlines():
        text = line.split("\\")[0].strip()
        if not text or text.startswith(("#", "-")):
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        wanted = next((s.version for s in requirement.specifier if s.operator == "=="), None)
        installed = package_version(requirement.name)
        if wanted is not None and installed != wanted:
            differences.append(f"{requirement.name} installed {installed or 'missing'}, lock {wanted}")
    return differences


@functools.lru_cache(maxsize=1)
def lock_state() -> dict[str, Any] | None:
    """``{"file", "sha256", "matches", "differences"}`` of the checkout's lock, or None without one."""
    lock = SOURCE_ROOT / LOCK_FILE
    if not lock.is_file():
        return None
    try:
        differences = lock_differences(lock)
    except ImportError:  # packaging missing: the hash still identifies the lock
        differences = None
    return {"file": str(lock), "sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
            "matches": None if differences is None else not differences, "differences": differences or []}


def command_line() -> str:
    """The command that is running, as a shell would take it (``pipeline train --features ...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("pipeline", "__main__.py")):
        argv[0] = "pipeline"
    return shlex.join(argv)


def provenance(device: str | None = None) -> dict[str, Any]:
    """The record described in the module docstring, for a result made now on ``device``."""
    return {
        "project": PROJECT,
        "version": package_version(),
        "git": git_state(),
        "lock": lock_state(),
        "command": command_line(),
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "host": socket.gethostname(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def short(record: dict[str, Any] | None) -> str:
    """One line for logs and reports: ``rvq-antispoof 0.1.0, git 3bc8233 (dirty), lock 1a2b3c4d``."""
    if not record:
        return "provenance unknown"
    parts = [f"{record.get('project', PROJECT)} {record.get('version') or '?'}"]
    git = record.get("git")
    if git:
        parts.append(f"git {git['commit'][:7]}{' (dirty)' if git.get('dirty') else ''}")
    lock = record.get("lock")
    if lock:
        parts.append(f"lock {lock['sha256'][:8]}{'' if lock.get('matches') in (True, None) else ' (environment differs)'}")
    return ", ".join(parts)


def device_label(device: str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: the device a result was computed on."""
    if not device.startswith("cuda"):
        return device
    import torch  # only callers that compute on a device ask, and they have torch  # noqa: PLC0415

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"

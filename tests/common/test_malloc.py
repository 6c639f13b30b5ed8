"""common.malloc: the thresholds are set once per process on glibc, and never over the user's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = "from common.malloc import keep_large_blocks; print(keep_large_blocks(), keep_large_blocks())"


def _run(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra_env
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_thresholds_are_set_on_glibc_unless_the_user_set_them():
    assert _run({}) == "True True"
    assert _run({"MALLOC_MMAP_THRESHOLD_": "65536"}) == "False False"
    assert _run({"MALLOC_TRIM_THRESHOLD_": "65536"}) == "False False"
    assert _run({"MALLOC_CHECK_": "0"}) == "True True"  # glibc's checking switch is not a threshold: no opt-out

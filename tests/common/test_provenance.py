"""What made a result: project version, git commit and dirty flag, the lock's hash, command, device."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest

from common import provenance as prov


def test_record_names_version_lock_command_and_device(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pipeline", "train", "--features", "a b.zarr"])
    record = prov.provenance("cpu")
    assert record["project"] == "rvq-antispoof" and record["version"] == prov.package_version()
    assert record["command"] == "pipeline train --features 'a b.zarr'"
    assert record["device"] == "cpu" and record["python"] and record["host"] and record["created"]
    lock = prov.SOURCE_ROOT / "requirements.lock"
    if lock.is_file():
        assert record["lock"]["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
        assert isinstance(record["lock"]["matches"], bool)
    else:
        assert record["lock"] is None


@pytest.mark.skipif(shutil.which("git") is None or not (prov.SOURCE_ROOT / ".git").exists(),
                    reason="not running from a git checkout")
def test_git_commit_and_dirty_flag_match_git_itself():
    head = subprocess.run(["git", "-C", str(prov.SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    status = subprocess.run(["git", "-C", str(prov.SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout
    state = prov.git_state()
    assert state == {"commit": head, "dirty": bool(status.strip())}
    assert head[:7] in prov.short(prov.provenance())


def test_lock_differences_name_each_package_that_differs(tmp_path):
    lock = tmp_path / "requirements.lock"
    numpy = prov.package_version("numpy")
    lock.write_text(f"numpy=={numpy} \\\n    --hash=sha256:00\n"
                    "click==0.0.1\n"
                    "not-a-real-package-xyz==1.0 ; python_version < '3'\n"
                    "absent-package-xyz==2.0\n")
    assert prov.lock_differences(lock) == [f"click installed {prov.package_version('click')}, lock 0.0.1",
                                           "absent-package-xyz installed missing, lock 2.0"]

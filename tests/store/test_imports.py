"""Data flows one way: extract -> store -> classify. The store package needs no torch or encodec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def loaded_after_importing(package: str) -> set[str]:
    """Top-level modules in sys.modules after importing every module of ``package`` in a fresh
    interpreter."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"package = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("package, forbidden", [
    ("common", ("torch", "encodec", "torchaudio", "store", "extract", "classify", "pipeline")),
    ("store", ("torch", "encodec", "torchaudio", "extract", "classify", "pipeline")),
    ("extract", ("classify", "pipeline")),
    ("classify", ("pipeline", "extract", "encodec", "torchaudio", "dask", "distributed")),
])
def test_a_package_never_imports_those_downstream_of_it(package, forbidden):
    loaded = loaded_after_importing(package)
    assert not [name for name in forbidden if name in loaded]

"""The shape of the code base: no module of the product packages over 500 lines (split along the
seams instead), and every product package listed in pyproject's package list."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "store", "extract", "classify", "pipeline")
MAX_LINES = 500


def test_no_module_of_the_product_packages_is_over_500_lines():
    long = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long[str(path.relative_to(ROOT))] = n
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_product_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").exists()
        assert f"{package}*" in include, package

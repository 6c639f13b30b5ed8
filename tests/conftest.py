"""Fixtures shared by every test package (stores are built with `tests.synthetic`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch

TEMP_SPACE_NEEDED = 2 << 30
"""Free bytes the run needs where pytest puts its temporary directories: a full run peaks at about
1.4 GB there (measured on CI), since each test store carries the codec's 93 MB of weights."""


def pytest_sessionstart(session):
    """Stop at once, in one line, when the temporary directory's disk cannot hold the run, instead of
    failing dozens of tests with "No space left on device" halfway through."""
    base = Path(session.config.option.basetemp or tempfile.gettempdir()).resolve()
    while not base.exists():  # a --basetemp not made yet: its disk is its first existing parent's
        base = base.parent
    free = shutil.disk_usage(base).free
    if free < TEMP_SPACE_NEEDED:
        pytest.exit(f"only {free / 2**30:.1f} GiB free at {base}; the tests need about {TEMP_SPACE_NEEDED / 2**30:.0f} "
                    "GiB there: free some space, or point TMPDIR (or --basetemp) at a disk that has it", returncode=3)


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread: the test models are tiny, and on a busy 2-core machine OpenMP's
    spinning threads make each step up to 100x slower. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def scoring(tmp_path_factory):
    """The scoring workflow of `tests.scoring`: corpus, train+dev store, separate eval store, run."""
    from tests.scoring import build

    return build(tmp_path_factory.mktemp("scoring"))

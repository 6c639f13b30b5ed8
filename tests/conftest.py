"""Fixtures shared by every test package (stores are built with `tests.synthetic`)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread: the test models are tiny, and on a busy 2-core machine OpenMP's
    spinning threads make each step up to 100x slower. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

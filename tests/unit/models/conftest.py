"""Model tests run single-threaded: their ops are tiny, and on a shared 2-core machine OpenMP's
second thread makes a small step 10x slower, not faster."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

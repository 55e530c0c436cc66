"""Runs every sparse test once per op backend (fbgemm where fbgemm_gpu imports, and torch)."""

import pytest

from .strategies import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Forces recframe.sparse onto one op path for the whole test (all hypothesis examples)."""
    from recframe.sparse.ops import use_backend

    with use_backend(request.param):
        yield request.param

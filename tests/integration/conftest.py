"""Fixtures of the integration tier."""

import pytest

from tests.integration.helpers import TINY


@pytest.fixture
def tiny() -> list[str]:
    """Overrides that make any experiment tiny (small tables, batches and validation)."""
    return list(TINY)

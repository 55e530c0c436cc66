"""Where tests find the real data sets: ``../shared/data`` next to the repository (never committed here).

Example:
    >>> path = require(KAGGLE_SAMPLE)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KAGGLE_SAMPLE = SHARED_DATA / "criteo_kaggle_dac_sample" / "train_examples.txt"
KAGGLE_TEST_SAMPLE = SHARED_DATA / "criteo_kaggle_dac_sample" / "test_head1999" / "test.tiny.txt"
MOVIELENS_100K = SHARED_DATA / "movielens_100k"


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the test saying which file is missing and why."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the real data sets live in ../shared/data next to the repository "
                    "(they may not be redistributed, so they are never committed here)")
    return path


# Experiments that read a data file, and the sample they are tested on.
EXPERIMENT_DATA = {"criteo_kaggle": KAGGLE_SAMPLE, "movielens": MOVIELENS_100K}


def experiment_data_args(experiment: str) -> list[str]:
    """``data.path=...`` for an experiment that reads a file (skips the test when it is absent), else nothing."""
    path = EXPERIMENT_DATA.get(experiment)
    return [f"data.path={require(path)}"] if path is not None else []

"""Where tests find the real data sets: ``$RECFRAME_DATA``, else ``../shared/data`` next to the repository (never
committed here; the recipes' download commands fill such a folder).

Example:
    >>> path = require(KAGGLE_SAMPLE)  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# the data sets' folder (the recipes' $DATA): RECFRAME_DATA, else ../shared/data next to the repository
SHARED_DATA = Path(os.environ.get("RECFRAME_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
KAGGLE_SAMPLE = SHARED_DATA / "criteo_kaggle_dac_sample" / "train_examples.txt"
KAGGLE_TEST_SAMPLE = SHARED_DATA / "criteo_kaggle_dac_sample" / "test_head1999" / "test.tiny.txt"
MOVIELENS_100K = SHARED_DATA / "movielens_100k"
MOVIELENS_LATEST_SMALL = SHARED_DATA / "movielens_latest_small"
MOVIELENS_1M_SAMPLE = SHARED_DATA / "movielens_1m_deepctr_sample" / "movielens_sample.txt"
CRITEO_SPEC = Path(__file__).resolve().parents[1] / "recipes" / "criteo" / "criteo_spec.yaml"
CRITEO_HEADER = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the test saying which file is missing and why."""
    if not path.exists():
        pytest.skip(f"{path} is absent: download the real data sets into RECFRAME_DATA or ../shared/data next to the "
                    "repository (recipes/*/README.md; they may not be redistributed, so they are never committed here)")
    return path


def criteo_tsv_as_csv(tsv: Path, out: Path, rows: int | None = None) -> Path:
    """The first ``rows`` lines (all: None) of a Criteo TSV as a CSV with the header label,I1..I13,C1..C26."""
    lines = tsv.read_text().splitlines()[:rows]
    out.write_text(",".join(CRITEO_HEADER) + "\n" + "".join(line.replace("\t", ",") + "\n" for line in lines))
    return out


@functools.cache
def _scratch() -> Path:
    """A temporary folder for files made from the samples, once per process (removed when it exits)."""
    path = Path(tempfile.mkdtemp(prefix="recframe-test-data-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def kaggle_head_preprocessed(rows: int = 3000) -> Path:
    """The Kaggle sample's first ``rows`` lines through ``recframe preprocess criteo`` (raw ids), once per process."""
    from recframe.data.preprocess import preprocess_command

    head = _scratch() / f"kaggle_head_{rows}.txt"
    head.write_text("\n".join(require(KAGGLE_SAMPLE).read_text().splitlines()[:rows]) + "\n")
    out = _scratch() / f"kaggle_head_{rows}_bin"
    assert preprocess_command(["criteo", "--input", str(head), "--output", str(out), "--workers", "1", "--quiet"]) == 0
    return out


def experiment_data_args(experiment: str) -> list[str]:
    """``data.path=...`` (and ``data.spec=...``) for an experiment that reads files (skips the test when the
    sample is absent), else nothing."""
    if experiment == "criteo_1tb":
        return [f"data.path={kaggle_head_preprocessed()}"]
    if experiment == "tabular":
        csv = criteo_tsv_as_csv(require(KAGGLE_SAMPLE), _scratch() / "kaggle_head.csv", rows=3000)
        return [f"data.path={csv}", f"data.spec={CRITEO_SPEC}"]
    path = EXPERIMENT_DATA.get(experiment)
    return [f"data.path={require(path)}"] if path is not None else []


# Experiments that read a data file, and the sample they are tested on (criteo_1tb and tabular: files made
# from the Kaggle sample).
EXPERIMENT_DATA = {"criteo_kaggle": KAGGLE_SAMPLE, "movielens": MOVIELENS_100K, "movielens_two_tower": MOVIELENS_100K}


"""Fuzz tier (issue 17, item 6): corrupted Criteo TSV files are read with exact per-kind counts and the values of
a plain-Python reference parser for every row kept (``on_error=skip``), or stop at the first bad line with one
DataError naming it (``on_error=error``); nothing else is ever raised."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recframe.data.criteo import KINDS, dense_transform, read_criteo_tsv
from recframe.data.report import DataError
from tests.fuzz.corrupt import corrupt, edits, fuzz_settings
from tests.unit.data.test_criteo import reference

pytestmark = pytest.mark.fuzz

FUZZ = fuzz_settings(500)


def clean_file(seed: int, count: int) -> bytes:
    """``count`` valid lines drawn from ``seed`` (numpy: fast; hypothesis picks the seed, the size and the edits)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        dense = ["" if rng.random() < 0.2 else str(int(rng.integers(-(10**18) + 1, 10**18)) >> int(rng.integers(0, 60)))
                 for _ in range(13)]
        ids = ["" if rng.random() < 0.2 else f"{int(rng.integers(0, 2**63)) >> int(rng.integers(0, 60)):x}"
               for _ in range(26)]
        lines.append("\t".join([str(int(rng.integers(0, 2))), *dense, *ids]))
    return ("\n".join(lines) + "\n").encode()


FILE = st.builds(clean_file, st.integers(0, 2**32 - 1), st.integers(1, 12))


@FUZZ
@given(clean=FILE, changes=edits(b"\t"), chunk=st.sampled_from([1, 7, 300, 1 << 20]))
def test_corrupted_criteo_files_are_read_like_the_reference(clean: bytes, changes: list, chunk: int) -> None:
    data = corrupt(clean, changes)
    expected_rows, expected_bad = reference(data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "day_0"
        path.write_bytes(data)
        rows, report = read_criteo_tsv(str(path), max_examples=1000, chunk_bytes=chunk)
        assert report.counts == {kind: len(expected_bad[kind]) for kind in KINDS}
        assert len(rows) == len(expected_rows)
        if expected_rows:  # no row's value differs from the reference's
            np.testing.assert_array_equal(rows.labels, [r[0] for r in expected_rows])
            np.testing.assert_array_equal(rows.dense, dense_transform(np.array([r[1] for r in expected_rows])))
            assert np.isfinite(rows.dense).all()
            np.testing.assert_array_equal(rows.categorical, np.array([[c[0] for c in r[2]] for r in expected_rows],
                                                                     dtype=np.uint64))
            np.testing.assert_array_equal(rows.missing, np.array([[c[1] for c in r[2]] for r in expected_rows]))
        first_bad = min((line for found in expected_bad.values() for line, _, _ in found), default=None)
        try:
            read_criteo_tsv(str(path), on_error="error", chunk_bytes=chunk)
        except DataError as error:  # one message naming the first bad line and the fix
            assert first_bad is not None and str(error).startswith(f"{path}:{first_bad}: "), (str(error), first_bad)
            assert "data.on_error=skip" in str(error) and "\n" not in str(error)
        else:
            assert first_bad is None

"""Column-wise field parsing equals a per-field plain-Python reference on random fields (good and bad), and the
tabular reader reports problems in file order: the earliest is the one raised, the first few of each kind kept,
every one counted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recframe.data.report import DataError
from recframe.data.spec import SpecDefaults, spec_from_config
from recframe.data.table_parse import parse_bags, parse_floats, stable_hash
from recframe.data.tabular import TabularSource

TOKENS = ["", "0", "1", "-3", "2.5", "1e3", "ff", "0x1f", "abc", "nan", "inf", " 7", "9.0", "Zz"]


def reference_value(text: str, dtype: str) -> int | None:
    try:
        if dtype == "string":
            return stable_hash(text)
        if dtype == "hex":
            return int(text, 16) % 2**64
        try:
            return int(text) % 2**64
        except ValueError:
            number = float(text)
            return int(number) % 2**64 if number.is_integer() else None
    except ValueError:
        return None


@pytest.mark.parametrize("seed", range(4))
def test_parsing_equals_a_per_field_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fields = [str(rng.choice(TOKENS)) for _ in range(60)]
    values, bad = parse_floats(fields, empty=0.0)
    for text, value, is_bad in zip(fields, values, bad, strict=True):
        try:
            expected = float(text) if text else 0.0
        except ValueError:
            expected = math.nan
        assert is_bad == (not math.isfinite(expected))
        if not is_bad:
            assert value == expected
    assert parse_floats(["", "1"], empty=None)[1].tolist() == [True, False]
    for dtype in ("string", "int", "hex"):
        for separator in ("", "|"):
            texts = ["|".join(str(t) for t in rng.choice(TOKENS, size=rng.integers(1, 4))) if separator
                     else str(rng.choice(TOKENS)) for _ in range(40)]
            bags = parse_bags(texts, dtype, separator)
            at = 0
            for i, text in enumerate(texts):
                parts = [p for p in (text.split(separator) if separator else [text]) if p]
                expected = [reference_value(p, dtype) for p in parts]
                assert bags.lengths[i] == len(parts)
                assert bags.bad[i] == (None in expected), (dtype, text)
                if None not in expected:
                    assert bags.values[at: at + len(parts)].tolist() == expected
                at += len(parts)


def test_problems_are_reported_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = ["1,1,a"] * 3 + ["1,x,a"] + ["1,1"] + ["2,1,a"] + ["1,y,b"] * 7 + ["0,2,c"]
    path.write_text("label,x,c\n" + "\n".join(rows) + "\n")
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    source = TabularSource(str(path), spec, {"c": 10}, batch_size=1, max_examples=2)
    source.setup()
    assert source.skipped.counts == {"short_row": 1, "long_row": 0, "bad_label": 1, "bad_dense": 8,
                                     "bad_categorical": 0}
    assert source.skipped.examples["bad_dense"] == [f"{path}:5: column x: 'x' is not a finite number",
                                                    f"{path}:8: column x: 'y' is not a finite number"]
    assert len(source.columns) == 4
    with pytest.raises(DataError, match=rf"^{path}:5: column x: 'x' is not a finite number"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()
    path.write_text("label,x,c\n1,1,a\n1,1\n1,x,a\n")  # the short row comes first
    with pytest.raises(DataError, match=rf"^{path}:3: 2 fields, expected 3"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()

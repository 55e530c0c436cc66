"""Column-wise field parsing equals a per-field plain-Python reference on random fields (good and bad), and the
tabular reader reports problems in file order: the earliest is the one raised, the first few of each kind kept,
every one counted."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from recframe.data.criteo import parse_criteo_bytes
from recframe.data.report import DataError
from recframe.data.spec import SpecDefaults, spec_from_config
from recframe.data.table_parse import parse_bags, parse_floats, stable_hash
from recframe.data.tabular import TabularSource

TOKENS = ["", "0", "1", "-3", "2.5", "1e3", "ff", "0x1f", "abc", "nan", "inf", " 7", "9.0", "Zz", "-1f", " 1f ", "1_f",
          "1_0", "1e30", "18446744073709551617", "9223372036854775807", "-9223372036854775809", "fffffffffffffffff"]
GARBAGE_IDS = ["0x1f", "-1f", "+1f", " 1f ", "1f ", "1_f", "fffffffffffffffff", "g1", "٣",  # bad
               "ff", "FF", "0", "ffffffffffffffff", "1e30"]  # good (1e30 is hex digits)


def reference_value(text: str, dtype: str) -> int | None:
    try:
        if dtype == "string":
            return stable_hash(text)
        if dtype == "hex":  # 1 to 16 hex digits
            ok = 1 <= len(text) <= 16 and all(c in "0123456789abcdefABCDEF" for c in text)
            return int(text, 16) if ok else None
        whole, _, zeros = text.partition(".")  # int: [+-]digits, maybe ".000", in int64
        digits = whole[1:] if whole[:1] in ("+", "-") else whole
        if not digits or any(c not in "0123456789" for c in digits) or zeros.strip("0"):
            return None
        return int(whole) % 2**64 if -(2**63) <= int(whole) < 2**63 else None
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


def test_hex_ids_are_bad_on_the_tabular_path_exactly_where_the_criteo_reader_finds_them_bad(tmp_path: Path) -> None:
    lines = ["1\t" + "\t".join(["1"] * 13 + [garbage] + ["68fd1e64"] * 25) for garbage in GARBAGE_IDS]
    rows, report = parse_criteo_bytes(("\n".join(lines) + "\n").encode(), source="t.tsv")
    criteo_good = {int(hex_id) for hex_id in rows.categorical[:, 0]}
    assert report.counts["bad_categorical"] == 9
    bags = parse_bags(GARBAGE_IDS, "hex", "")
    assert bags.bad.tolist() == [True] * 9 + [False] * 5
    assert set(bags.values[~np.repeat(bags.bad, bags.lengths)].tolist()) == criteo_good
    path = tmp_path / "t.csv"  # the same lines through a feature spec
    path.write_text("label,x,c\n" + "".join(f'1,1,"{garbage}"\n' for garbage in GARBAGE_IDS))
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    spec = dataclasses.replace(spec, sparse=(dataclasses.replace(spec.sparse[0], dtype="hex"),))
    source = TabularSource(str(path), spec, {"c": 10}, batch_size=1, val_fraction=0.0)
    source.setup()
    assert len(source.columns) == 5 and source.skipped.counts["bad_categorical"] == 9


def test_problems_are_reported_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = ["1,1,a"] * 3 + ["1,x,a"] + ["1,1"] + ["2,1,a"] + ["1,y,b"] * 7 + ["0,2,c"]
    path.write_text("label,x,c\n" + "\n".join(rows) + "\n")
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    source = TabularSource(str(path), spec, {"c": 10}, batch_size=1, max_examples=2)
    source.setup()
    assert source.skipped.counts == {"short_row": 1, "long_row": 0, "unclosed_quote": 0, "bad_encoding": 0,
                                     "huge_field": 0, "bad_label": 1, "bad_dense": 8, "bad_categorical": 0,
                                     "long_bag": 0, "truncated": 0, "bad_entry": 0}
    assert source.skipped.examples["bad_dense"] == [f"{path}:5: column x: 'x' is not a finite number",
                                                    f"{path}:8: column x: 'y' is not a finite number"]
    assert len(source.columns) == 4
    with pytest.raises(DataError, match=rf"^{path}:5: column x: 'x' is not a finite number"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()
    path.write_text("label,x,c\n1,1,a\n1,1\n1,x,a\n")  # the short row comes first
    with pytest.raises(DataError, match=rf"^{path}:3: 2 fields, expected 3"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()

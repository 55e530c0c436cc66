"""Fuzz tier (issue 17, item 6): corrupted CSV files through the tabular reader (``TabularSource``) give exact
per-kind counts and, for every row kept, the values of a plain-Python reference (``on_error=skip``), or stop at
the first bad line with one DataError naming it (``on_error=error``); nothing else is ever raised.

The reference splits records as the documented policy says, with Python's ``csv`` module as the tokenizer (the
same one the reader uses); it types each field on its own, per field in Python (``float``, a regular expression
for hex ids, the float32 range after the transform), where the reader parses whole columns with numpy.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recframe.data.report import DataError
from recframe.data.spec import DenseColumn, FeatureSpec, SparseColumn
from recframe.data.tabular import KINDS, TabularSource, stable_hash
from tests.fuzz.corrupt import corrupt, edits, fuzz_settings

pytestmark = pytest.mark.fuzz

FUZZ = fuzz_settings(800)
HEADER = ["label", "price", "qty", "user", "item"]
SPEC = FeatureSpec(labels=("label",), positive_threshold=None,
                   dense=(DenseColumn("price", "price", "log1p"), DenseColumn("qty", "qty", "none")),
                   sparse=(SparseColumn("user", "user", "string", "modulo", 1, ""),
                           SparseColumn("item", "item", "hex", "modulo", 1, "")))
ROWS = 2**62 + 1  # table rows: ids are 1 + value % 2**62
HEX = re.compile(r"[0-9a-fA-F]{1,16}")
WORDS = ["alice", "bob", "", "o'neil", "a b", "x,y", 'say "hi"', "é"]


def clean_file(seed: int, count: int) -> bytes:
    """A header and ``count`` valid rows drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    out = [",".join(HEADER)]
    for _ in range(count):
        price = "" if rng.random() < 0.2 else repr(float(rng.normal() * 10 ** rng.integers(0, 6)))
        qty = "" if rng.random() < 0.2 else str(int(rng.integers(-50, 50)))
        user = WORDS[rng.integers(len(WORDS))]
        user = '"' + user.replace('"', '""') + '"' if any(c in user for c in ',"') else user
        item = "" if rng.random() < 0.2 else f"{int(rng.integers(0, 2**63)) >> int(rng.integers(0, 60)):x}"
        out.append(",".join([str(int(rng.integers(0, 2))), price, qty, user, item]))
    return ("\n".join(out) + "\n").encode()


def physical_lines(data: bytes) -> list[tuple[int, bytes]]:
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return list(enumerate(lines, start=1))


def records(data: bytes) -> tuple[list[str] | None, list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """(header, [(line, fields)] of rows of the header's width, [(line, kind)] of the rows left out); header None:
    the file cannot be read (its header is not UTF-8)."""
    lines, problems = [], []
    cut = 0
    for number, raw in physical_lines(data):
        cut = 0 if raw.endswith(b"\n") else number
        try:
            lines.append((number, raw.decode("utf-8-sig" if number == 1 else "utf-8")))
        except UnicodeDecodeError:
            if not lines:
                return None, [], []
            problems.append((number, "bad_encoding"))
    queue, header, rows = deque(lines), None, []
    while queue:
        taken: list[tuple[int, str]] = []

        def feed(taken: list[tuple[int, str]]) -> object:
            while queue:
                taken.append(queue.popleft())
                yield taken[-1][1]

        try:
            row = next(csv.reader(feed(taken)), None)
        except csv.Error:
            problems.append((taken[0][0], "huge_field"))
            queue.extendleft(reversed(taken[1:]))
            continue
        if row is None:
            break
        start, end = taken[0][0], taken[-1][0]
        if not row:
            continue
        if header is None:
            header = row
        elif end == cut and (end == start or len(row) == len(header)):
            problems.append((start, "truncated"))
        elif len(row) == len(header):
            rows.append((start, row))
        elif end > start:
            problems.append((start, "unclosed_quote"))
            queue.extendleft(reversed(taken[1:]))
        else:
            problems.append((start, "short_row" if len(row) < len(header) else "long_row"))
    return header or [], rows, problems


def typed(fields: dict[str, str]) -> tuple[str | None, tuple]:
    """(the first problem's kind or None, (label, price, qty, user id, item id)) of one row, field by field."""

    def number(text: str, empty: float | None) -> float | None:
        if text == "":
            return empty
        try:
            return float(text)
        except ValueError:
            return None

    label = number(fields["label"], None)
    if label not in (0.0, 1.0):
        return "bad_label", ()
    dense = []
    for column, log in (("price", True), ("qty", False)):
        value = number(fields[column], 0.0)
        if value is None or not np.isfinite(value):
            return "bad_dense", ()
        with np.errstate(over="ignore"):  # beyond float32: inf, which is the point
            value32 = np.float32(np.log1p(np.maximum(np.float64(value), 0.0)) if log else np.float64(value))
        if not np.isfinite(value32):
            return "bad_dense", ()
        dense.append(value32)
    user = 0 if fields["user"] == "" else 1 + stable_hash(fields["user"]) % (ROWS - 1)
    if fields["item"] != "" and not HEX.fullmatch(fields["item"]):
        return "bad_categorical", ()
    item = 0 if fields["item"] == "" else 1 + int(fields["item"], 16) % (ROWS - 1)
    return None, (label, *dense, user, item)


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 10), changes=edits(b","))
def test_corrupted_csv_files_are_read_like_the_reference(seed: int, count: int, changes: list) -> None:
    data = corrupt(clean_file(seed, count), changes)
    header, rows, problems = records(data)
    kept, bad = [], list(problems)
    readable = header is not None and all(c in header for c in HEADER)
    for line, fields in rows if readable else []:
        kind, values = typed({c: fields[header.index(c)] for c in HEADER})
        if kind is None:
            kept.append(values)
        else:
            bad.append((line, kind))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_bytes(data)
        source = TabularSource(str(path), SPEC, {"user": ROWS, "item": ROWS}, batch_size=4, val_fraction=0.0,
                               max_examples=1000)
        try:
            source.setup()
        except DataError as error:  # a header without the columns, or no row left: one message, no traceback
            assert not kept, str(error)
            assert "\n" not in str(error).split(". ")[0]
        else:
            assert source.skipped.counts == {k: sum(1 for _, kind in bad if kind == k) for k in KINDS}
            c = source.columns
            assert len(c) == len(kept)  # no row's value differs from the reference's
            assert c.labels.tolist() == [v[0] for v in kept]
            np.testing.assert_array_equal(c.dense, np.array([v[1:3] for v in kept], np.float32).reshape(-1, 2))
            assert c.ids.tolist() == [[v[3], v[4]] for v in kept]
        first_bad = min((line for line, _ in bad), default=None)
        try:
            TabularSource(str(path), SPEC, {"user": ROWS, "item": ROWS}, batch_size=4, val_fraction=0.0,
                          on_error="error").setup()
        except DataError as error:
            message = str(error)
            if readable and first_bad is not None:
                assert re.match(rf"{re.escape(str(path))}:{first_bad}[:-]", message), (message, first_bad)
                assert "data.on_error=skip" in message
        else:
            assert readable and first_bad is None and kept

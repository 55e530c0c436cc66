"""Reading a table file's fields: CSV (with its malformed rows located), Parquet and libsvm, for the tabular source.

``read_csv_table``, ``read_parquet_table`` and ``read_libsvm_table`` return the wanted columns' fields as text
(a Parquet list, or a libsvm field given several times in a line, as a list of texts) with each row's line
(CSV, libsvm) or row number (Parquet), and the rows that could not be split into fields as problems;
``recframe.data.tabular`` parses the fields as its feature spec says.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("label,c\\n1,a\\n0\\n")
    >>> raw = read_csv_table(str(path), ",", ["label", "c"])
    >>> raw.fields["c"], raw.lines.tolist(), [kind for _, kind, _ in raw.problems]
    (['a'], [2], ['short_row'])
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from recframe import storage
from recframe.data.report import DataError
from recframe.data.table_parse import Field


def import_pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or an ImportError that names the extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow, which is not installed: pip install 'recframe[parquet]' "
                          "(or pip install pyarrow), or give a CSV file") from None
    return pq


@dataclass
class RawTable:
    """The fields of the rows read (of the right width), by column, and where each row is.

    Args:
        header: every column name.
        fields: column name -> its fields, for the columns asked for.
        lines: each row's CSV line number (Parquet: row number, from 1).
        problems: (line, kind, message) of rows left out while reading (wrong number of fields).
    """

    header: list[str]
    fields: dict[str, list[Field]]
    lines: np.ndarray
    problems: list[tuple[int, str, str]]


class _Lines:
    """The physical lines of a CSV file for ``csv.reader``, numbered, with lines to read again pushed back.

    ``csv.reader`` pulls lines one at a time and keeps none between rows, so the lines of a row that ran on
    (an unclosed quote) can be pushed back and read again as rows of their own. ``taken`` holds the lines of
    the current row as ``(number, text)``.
    """

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self.lines, self.pending, self.taken = lines, deque[tuple[int, str]](), list[tuple[int, str]]()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        number, text = self.pending.popleft() if self.pending else next(self.lines)
        self.taken.append((number, text))
        return text


def read_csv_table(path: str, delimiter: str, wanted: Sequence[str]) -> RawTable:
    """The ``wanted`` columns of a CSV file with a header; malformed rows become problems.

    Blank lines are ignored. A row of another width than the header is a ``short_row`` or ``long_row``. A row
    of another width that spans several physical lines has an unclosed quote (``csv`` read on to the next
    quote, or to the end of the file): its first line is an ``unclosed_quote`` and the lines after it are read
    again as rows, so the good rows among them are kept. A line that is not UTF-8 is ``bad_encoding``; a field
    longer than ``csv.field_size_limit()`` is ``huge_field`` (its first line; the lines after it are read again).
    A row (of the header's width or shorter) that ends on a last line without its newline is ``truncated``.
    """
    problems: list[tuple[int, str, str]] = []
    header: list[str] = []

    cut = [0]  # the number of a last line without its newline

    def decoded(f: BinaryIO) -> Iterator[tuple[int, str]]:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                cut[0] = number
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")  # -sig: drop a byte-order mark
            except UnicodeDecodeError as e:
                message = (f"{path}:{number}: byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8: "
                           "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
                if not header:  # without the header no row can be read
                    raise DataError(f"{message} (the header)") from None
                problems.append((number, "bad_encoding", message))

    with storage.open_file(storage.location(path), "rb") as f:  # a local path or an fsspec URL, read as it streams
        lines = _Lines(decoded(f))
        reader = csv.reader(lines, delimiter=delimiter)
        rows, numbers = [], []
        while True:
            lines.taken.clear()
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                start = lines.taken[0][0] if lines.taken else 0
                problems.append((start, "huge_field", f"{path}:{start}: {e} (is a quote not closed?)"))
                lines.pending.extendleft(reversed(lines.taken[1:]))
                continue
            start, end = lines.taken[0][0], lines.taken[-1][0]
            if not row:  # a blank line
                continue
            if not header:
                header = row
            elif end == cut[0] and (end == start or len(row) == len(header)):
                problems.append((start, "truncated", f"{path}:{start}: the last line has no line end, so it may have "
                                 "been cut inside a field (an interrupted copy or download); the row was not read: "
                                 "if the file is complete, end it with a newline"))
            elif len(row) == len(header):
                rows.append(row)
                numbers.append(start)
            elif end > start:
                problems.append((start, "unclosed_quote",
                                 f"{path}:{start}-{end}: a quoted field is not closed (the row ran on to line {end}); "
                                 f"lines {start + 1}-{end} were read again: close or remove the quote"))
                lines.pending.extendleft(reversed(lines.taken[1:]))
            else:
                problems.append((start, "short_row" if len(row) < len(header) else "long_row",
                                 f"{path}:{start}: {len(row)} fields, expected {len(header)} (the header's)"))
    by_column = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    fields = {name: list(by_column[header.index(name)]) for name in wanted if name in header}
    return RawTable(header, fields, np.array(numbers, np.int64), problems)


def _parquet_texts(column: Any) -> list[Field]:
    """A Parquet column as texts: nulls empty, lists as lists of texts, booleans as 0/1."""
    import pyarrow as pa

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return [[str(v) for v in value if v is not None] if value is not None else "" for value in column.to_pylist()]
    if pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    return ["" if v is None else v for v in column.cast(pa.string()).to_pylist()]


def read_parquet_table(path: str, wanted: Sequence[str]) -> RawTable:
    """The ``wanted`` columns of a Parquet file (Parquet rows have no width problems)."""
    pq = import_pyarrow_parquet()
    with storage.open_file(storage.location(path), "rb") as f:  # pyarrow reads the columns it needs from it
        parquet = pq.ParquetFile(f)
        header = list(parquet.schema_arrow.names)
        present = [name for name in dict.fromkeys(wanted) if name in header]
        table = parquet.read(columns=present)
    fields = {name: _parquet_texts(table.column(name)) for name in present}
    return RawTable(header, fields, np.arange(1, table.num_rows + 1, dtype=np.int64), [])


def read_libsvm_table(path: str, label: str, dense: Sequence[str], categorical: Sequence[str]) -> RawTable:
    """The label, ``dense`` and ``categorical`` columns of a libsvm file; malformed lines become problems.

    A line is ``label entry entry ...`` (separated by spaces or tabs; ``#`` starts a comment to the line's end),
    each entry ``field:id:value`` (libffm, field-aware: FuxiCTR's and many CTR data sets') or ``key:value``
    (plain libsvm). The entry's first part names its column: a categorical column gets the entry's ``id``
    (``key:value``: the value) as its field's text, several entries of the column in a line making a bag, and
    the entry's value is not used (ids are unweighted); a dense column gets the entry's ``value``, one entry at
    most. A column without an entry in a line is empty: a missing id (row 0), or the dense value 0 (libsvm
    leaves zeros out). The first token is the label column, named ``label`` in the returned table. A column is
    read as dense or as categorical, not both (``field:id:value`` holds two different things).

    Problems: an entry that is neither form, or a second entry of a dense column in a line: ``bad_entry``; a line
    that is not UTF-8: ``bad_encoding``; a last line without its newline (perhaps cut inside an entry):
    ``truncated``. Blank and comment lines are ignored. The header is the label and every column seen.
    """
    both = sorted(set(dense) & set(categorical))
    if both:
        raise DataError(f"{path}: libsvm columns {both} are read as dense and as categorical: a libsvm field gives "
                        "ids (categorical) or values (dense), not both; read each once in the feature spec")
    wanted_dense, wanted_ids = set(dense), set(categorical)
    labels: list[str] = []
    values: dict[str, list[Field]] = {name: [] for name in [*dense, *categorical]}
    numbers: list[int] = []
    problems: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    with storage.open_file(storage.location(path), "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                problems.append((number, "bad_encoding", f"{path}:{number}: byte {raw[e.start]:#04x} at column "
                                 f"{e.start + 1} is not UTF-8: save the file as UTF-8"))
                continue
            tokens = text.partition("#")[0].split()
            if not tokens:
                continue
            if not raw.endswith(b"\n"):
                problems.append((number, "truncated", f"{path}:{number}: the last line has no line end, so it may "
                                 "have been cut inside an entry (an interrupted copy or download); the line was not "
                                 "read: if the file is complete, end it with a newline"))
                continue
            row: dict[str, Field] = {}
            problem = ""
            for token in tokens[1:]:
                parts = token.split(":")  # field:id:value, or key:value (its value is also its id)
                if len(parts) == 3:
                    column, id_text, value = parts
                elif len(parts) == 2:
                    column, id_text = parts
                    value = id_text
                else:
                    column = id_text = value = ""
                if not (column and id_text and value):
                    problem = f"entry {token!r} is not field:id:value nor key:value"
                    break
                seen.add(column)
                if column in wanted_dense:
                    if column in row:
                        problem = f"dense column {column} has more than one entry ({token!r})"
                        break
                    row[column] = value
                elif column in wanted_ids:
                    held = row.get(column)
                    row[column] = id_text if held is None else [*([held] if isinstance(held, str) else held), id_text]
            if problem:
                problems.append((number, "bad_entry", f"{path}:{number}: {problem}"))
                continue
            labels.append(tokens[0])
            numbers.append(number)
            for name, column_values in values.items():
                column_values.append(row.get(name, ""))
    header = [label, *sorted(seen, key=lambda c: (len(c), c))]
    return RawTable(header, {label: labels, **values}, np.array(numbers, np.int64), problems)

"""Any CSV or Parquet table as click data: data kind ``tabular``, described by a feature spec.

The spec (``recframe.data.spec``: a YAML file given as ``data.spec``, or the features config)
says which column is the label, which are dense and which categorical. Each dense feature reads
its column as a float (empty or null: 0) through its transform (``none`` or ``log1p``:
``log(1 + max(x, 0))``). Each categorical feature reads its column as a value: empty or null is
missing (row 0); with a separator a field is a bag of values (``Comedy|Drama``; a Parquet list
column is a bag as it is). A value becomes a 64-bit number by its ``dtype``: ``string`` (a stable
BLAKE2b hash of the text: the same in every run and file), ``int`` (a decimal integer; ``3.0``
too) or ``hex`` (``68fd1e64``: Criteo's categoricals read this way get exactly the ids of the
Criteo reader), then a table row by modulo or by a vocabulary of the training rows
(``recframe.data.categorical``). A label column is 0/1, or positive when ``>= positive_threshold``; a spec
with several label columns makes labels of shape ``[rows, tasks]`` (one task each).
The last ``val_fraction`` of the valid rows validate.

Formats: CSV with a header row (Python's ``csv`` module: quoting works) and Parquet (pyarrow,
the optional extra ``recframe[parquet]``), chosen by ``format`` (``auto``: by the file suffix,
``.parquet``/``.pq`` is Parquet). Fields are parsed column by column (``recframe.data.table_parse``).

Malformed rows (a CSV row with another number of fields than the header, a CSV row with an unclosed quote:
``unclosed_quote``, counted on its first line, the lines it ran over read again; a line that is not UTF-8:
``bad_encoding``; a field longer than ``csv.field_size_limit()``: ``huge_field``; a dense value that is not
a finite number, a categorical value that is not of its dtype, a bad label, a field with more values than
its feature's ``max_values``: ``long_bag``, as bags are padded to the longest one kept) are skipped and counted
per kind, or stop the run naming file, line (CSV) or row (Parquet) and column (``on_error``). A dense value
is checked after its transform and the cast to float32, the training dtype (``1e39`` is a finite float64 but
not a float32: ``bad_dense``). A CSV row that ends on a last line without its newline may have been cut inside
a field (an interrupted copy), so it is never read as a row: ``truncated``. A UTF-8 byte-order mark at the
start of a CSV file (spreadsheet exports write one) is dropped.

Example:
    >>> from recframe.data.spec import SpecDefaults, spec_from_config
    >>> spec = spec_from_config([], ["user_id", "genres"], {}, SpecDefaults(label="rating", positive_threshold=4,
    ...                         multi_value_separator="|"))
    >>> source = TabularSource("ratings.csv", spec, table_rows={"user_id": 1000, "genres": 30},
    ...                        batch_size=256)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from omegaconf import DictConfig

from recframe.config.resolve import feature_rows
from recframe.data.arrays import Columns, InMemorySource
from recframe.data.categorical import Vocabulary, modulo_ids
from recframe.data.report import DataError, SkipReport
from recframe.data.source import DATA_SOURCES
from recframe.data.spec import FeatureSpec, tabular_spec
from recframe.data.table_parse import (
    Bags,
    Field,
    bag_size,
    first_bad_value,
    float_or_nan,
    parse_bags,
    parse_floats,
    stable_hash,
)

__all__ = ["TabularSource", "read_header", "stable_hash", "table_format"]

KINDS = ("short_row", "long_row", "unclosed_quote", "bad_encoding", "huge_field", "bad_label", "bad_dense",
         "bad_categorical", "long_bag", "truncated")
FORMATS = ("auto", "csv", "parquet")
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: str | Path, fmt: str = "auto") -> str:
    """``csv`` or ``parquet``: ``fmt``, or by the suffix of ``path`` when ``fmt`` is ``auto``."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}; choose one of {list(FORMATS)}")
    if fmt != "auto":
        return fmt
    return "parquet" if Path(path).suffix.lower() in PARQUET_SUFFIXES else "csv"


def import_pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or an ImportError that names the extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow, which is not installed: pip install 'recframe[parquet]' "
                          "(or pip install pyarrow), or give a CSV file") from None
    return pq


def read_header(path: str | Path, delimiter: str = ",", fmt: str = "auto") -> list[str]:
    """The column names of a table file: a CSV file's first row, or a Parquet file's schema."""
    if table_format(path, fmt) == "parquet":
        return list(import_pyarrow_parquet().read_schema(path).names)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: without a byte-order mark
            return next(csv.reader(f, delimiter=delimiter), [])
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: the header (line 1) is not UTF-8 ({e.reason}): save the file as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path}: the header (line 1) is not a CSV row ({e}): is it a CSV file?") from None


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

    with open(path, "rb") as f:
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
    parquet = import_pyarrow_parquet().ParquetFile(path)
    header = list(parquet.schema_arrow.names)
    present = [name for name in dict.fromkeys(wanted) if name in header]
    table = parquet.read(columns=present)
    fields = {name: _parquet_texts(table.column(name)) for name in present}
    return RawTable(header, fields, np.arange(1, table.num_rows + 1, dtype=np.int64), [])


class TabularSource(InMemorySource):
    """A CSV or Parquet table read into memory as the spec says; the last ``val_fraction`` of rows validate.

    Args:
        path: the CSV or Parquet file.
        spec: what the columns are.
        table_rows: rows of the table behind each sparse feature.
        batch_size: samples per batch per rank.
        fmt: ``auto`` (by suffix), ``csv`` or ``parquet``.
        delimiter: the CSV field separator.
        val_fraction: the last fraction of rows used for validation.
        shuffle: shuffle the training rows every epoch.
        seed: seed of the shuffles.
        on_error: ``skip`` or ``error`` for malformed rows.
        max_examples: malformed rows described per kind.
    """

    def __init__(self, path: str, spec: FeatureSpec, table_rows: dict[str, int], batch_size: int,
                 fmt: str = "auto", delimiter: str = ",", val_fraction: float = 0.1, shuffle: bool = True,
                 seed: int = 0, on_error: str = "skip", max_examples: int = 5) -> None:
        problems = spec.problems()
        if problems:
            raise ValueError(f"TabularSource: {'; '.join(problems)}")
        self.path, self.spec, self.format = path, spec, table_format(path, fmt)
        self.keys = [s.feature for s in spec.sparse]  # the KJT keys
        self.table_rows = {s.feature: int(table_rows[s.feature]) for s in spec.sparse}
        self.batch_size, self.delimiter, self.val_fraction = batch_size, delimiter, val_fraction
        self.shuffle, self.seed, self.on_error = shuffle, seed, on_error
        self.skipped = SkipReport(KINDS, max_examples)
        self.columns: Columns | None = None
        self.num_train = 0

    def _where(self, line: int) -> str:
        return f"{self.path}:{line}" if self.format == "csv" else f"{self.path}: row {line}"

    def _read(self) -> tuple[np.ndarray, np.ndarray, list[Bags]]:
        """Labels, dense values and categorical bags of the valid rows (problems counted or raised)."""
        spec = self.spec
        wanted = [*spec.labels, *(d.column for d in spec.dense), *(s.column for s in spec.sparse)]
        raw = read_csv_table(self.path, self.delimiter, wanted) if self.format == "csv" else \
            read_parquet_table(self.path, wanted)
        absent = [c for c in dict.fromkeys(wanted) if c not in raw.header]
        if absent:
            raise DataError(f"{self.path}: the table has no columns {absent}; it has {raw.header}: fix the feature "
                            "spec (data.spec) or, without one, set data.label or map features to columns with "
                            "data.columns.<feature>=<column>")
        checks: list[tuple[str, str, np.ndarray, Any]] = []
        columns = []
        for name in spec.labels:  # one column per task
            labels, bad_label = parse_floats(raw.fields[name], empty=None)
            if spec.positive_threshold is not None:
                labels = (labels >= spec.positive_threshold).astype(np.float64)
            else:
                bad_label |= ~np.isin(labels, (0.0, 1.0))
            checks.append(("bad_label", name, bad_label, None))
            columns.append(labels)
        labels = columns[0] if len(columns) == 1 else np.stack(columns, axis=1)  # [n] or [n, tasks]
        dense = np.zeros((raw.lines.size, len(spec.dense)), np.float32)
        for k, d in enumerate(spec.dense):
            values, bad = parse_floats(raw.fields[d.column], empty=0.0)
            if d.transform == "log1p":
                values = np.log1p(np.maximum(values, 0))
            with np.errstate(over="ignore", invalid="ignore"):
                dense[:, k] = values  # float32, the training dtype: checked after the cast (1e39 becomes inf)
            checks.append(("bad_dense", d.column, bad | ~np.isfinite(dense[:, k]), None))
        bags = []
        for s in spec.sparse:
            bags.append(parse_bags(raw.fields[s.column], s.dtype, s.separator))
            checks.append(("bad_categorical", s.column, bags[-1].bad, s))
            checks.append(("long_bag", s.column, bags[-1].lengths > s.max_values, s))
        ok = self._count_problems(raw, checks)
        return labels[ok], dense[ok], [b.take(ok) for b in bags]

    def _message(self, raw: RawTable, row: int, check: tuple[str, str, np.ndarray, Any]) -> str:
        kind, column, _, sparse = check
        text, where = raw.fields[column][row], self._where(int(raw.lines[row]))
        if kind == "bad_label":
            threshold = self.spec.positive_threshold
            rule = "0 or 1" if threshold is None else f">= {threshold} is positive"
            return f"{where}: column {column}: {text!r} is not a label ({rule})"
        if kind == "bad_dense":
            if np.isfinite(float_or_nan(text)):
                return (f"{where}: column {column}: {text!r} is beyond float32, the training dtype (|x| <= 3.4e38 "
                        "after the feature's transform): rescale the column or give it transform: log1p")
            return f"{where}: column {column}: {text!r} is not a finite number"
        if kind == "long_bag":
            return (f"{where}: column {column}: {bag_size(text, sparse.separator)} values, more than max_values="
                    f"{sparse.max_values}: raise categorical.{sparse.feature}.max_values in the feature spec")
        bad = first_bad_value(text, sparse.dtype, sparse.separator)
        return f"{where}: column {column}: {bad!r} is not a {sparse.dtype} value"

    def _count_problems(self, raw: RawTable, checks: list[tuple[str, str, np.ndarray, Any]]) -> np.ndarray:
        """The rows without problems; each other row counts under its first problem (in column order), or the
        earliest problem of the file is raised (``on_error=error``)."""
        first = np.full(raw.lines.size, -1)
        for c, (_, _, bad, _) in enumerate(checks):
            first[(first < 0) & bad] = c
        bad_rows = np.flatnonzero(first >= 0)
        if self.on_error == "error":
            found = [(line, message) for line, _, message in raw.problems]
            if bad_rows.size:
                row = int(bad_rows[0])
                found.append((int(raw.lines[row]), self._message(raw, row, checks[first[row]])))
            if found:
                raise DataError(f"{min(found)[1]}; fix or remove the row, or set data.on_error=skip to skip and count "
                                "malformed rows")
            return first < 0
        keep = self.skipped.max_examples
        for kind in KINDS:
            rows = bad_rows[[checks[first[r]][0] == kind for r in bad_rows]] if bad_rows.size else bad_rows
            width = [(line, message) for line, k, message in raw.problems if k == kind]
            examples = sorted(width + [(int(raw.lines[r]), self._message(raw, r, checks[first[r]]))
                                       for r in rows[:keep]])[:keep]
            for _, message in examples:
                self.skipped.add(kind, message)
            if len(width) + rows.size > len(examples):
                self.skipped.add(kind, "", len(width) + rows.size - len(examples))
        return first < 0

    def setup(self) -> None:
        if self.columns is not None:
            return
        labels, dense, bags = self._read()
        if not labels.shape[0]:
            raise DataError(f"{self.path}: no valid rows. " + self.skipped.summary(self.path))
        n, num_sparse = labels.shape[0], len(self.spec.sparse)
        self.num_train = n - int(round(n * self.val_fraction))
        multi = any(s.separator for s in self.spec.sparse) or any(b.lengths.max(initial=0) > 1 for b in bags)
        width = max([int(b.lengths.max(initial=1)) for b in bags] + [1]) if multi else 1
        ids = np.full((n, num_sparse, width), -1, dtype=np.int64)
        for j, (s, b) in enumerate(zip(self.spec.sparse, bags, strict=True)):
            values, has = b.matrix(width)
            keep = has.copy()
            keep[~has.any(axis=1), 0] = True  # a missing field is a bag of one id: row 0
            if s.mapping == "modulo":
                mapped = modulo_ids(values, ~has, self.table_rows[s.feature])
            else:
                vocab = Vocabulary.build(values[: self.num_train][has[: self.num_train]], s.vocab_threshold,
                                         capacity=self.table_rows[s.feature])
                mapped = vocab.lookup(values, ~has)
            ids[:, j] = np.where(keep, mapped, -1)
        self.columns = Columns(dense=dense, ids=ids if multi else ids[:, :, 0],
                               labels=labels.astype(np.float32))

    def report(self) -> dict[str, float]:
        columns = self._columns()
        return {"data/rows_train": self.num_train, "data/rows_val": len(columns) - self.num_train,
                **self.skipped.metrics()}

    def summary(self) -> str:
        columns = self._columns()
        return (f"{self.path}: {len(columns)} valid rows: {self.num_train} for training, "
                f"{len(columns) - self.num_train} for validation; "
                + self.skipped.summary(self.path).removeprefix(f"{self.path}: "))


@DATA_SOURCES.register("tabular")
def tabular_from_config(cfg: DictConfig) -> TabularSource:
    """The CSV/TSV table of ``data=tabular`` (its columns from ``data.spec``)."""
    data = cfg.data
    return TabularSource(
        str(data.path), tabular_spec(cfg), table_rows=feature_rows(cfg), batch_size=data.batch_size, fmt=data.format,
        delimiter=data.delimiter, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
        on_error=data.on_error, max_examples=data.max_reported_errors,
    )

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
(``recframe.data.categorical``). The label column is 0/1, or positive when ``>= positive_threshold``.
The last ``val_fraction`` of the valid rows validate.

Formats: CSV with a header row (Python's ``csv`` module: quoting works) and Parquet (pyarrow,
the optional extra ``recframe[parquet]``), chosen by ``format`` (``auto``: by the file suffix,
``.parquet``/``.pq`` is Parquet). Both read about 10^5 rows/s (one Python step per row).

Malformed rows (a CSV row with another number of fields than the header, a dense value that is not
a finite number, a categorical value that is not of its dtype, a bad label) are skipped and counted
per kind, or stop the run naming file, line (CSV) or row (Parquet) and column (``on_error``).

Example:
    >>> from recframe.data.spec import SpecDefaults, spec_from_config
    >>> spec = spec_from_config([], ["user_id", "genres"], {}, SpecDefaults(label="rating", positive_threshold=4,
    ...                         multi_value_separator="|"))
    >>> source = TabularSource("ratings.csv", spec, table_rows={"user_id": 1000, "genres": 30},
    ...                        batch_size=256)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recframe.data.arrays import Columns, InMemorySource
from recframe.data.categorical import Vocabulary, modulo_ids
from recframe.data.report import DataError, SkipReport
from recframe.data.spec import FeatureSpec

KINDS = ("short_row", "long_row", "bad_label", "bad_dense", "bad_categorical")
FORMATS = ("auto", "csv", "parquet")
PARQUET_SUFFIXES = (".parquet", ".pq")
_U64 = (1 << 64) - 1
Field = str | list[str]  # a CSV field, or the text of a Parquet value (a list column: a list)


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process and run (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def parse_value(text: str, dtype: str) -> int:
    """The 64-bit value of a categorical field's ``text`` (ValueError if it is not of ``dtype``).

    Example:
        >>> parse_value("68fd1e64", "hex"), parse_value("-1", "int"), parse_value("3.0", "int")
        (1761418852, 18446744073709551615, 3)
    """
    if dtype == "string":
        return stable_hash(text)
    if dtype == "hex":
        return int(text, 16) & _U64
    try:
        return int(text) & _U64
    except ValueError:
        number = float(text)  # "3.0" (pandas writes integer columns with nulls as floats)
        if not number.is_integer():
            raise
        return int(number) & _U64


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
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def _text(value: Any) -> Field:
    """A Parquet value as the text a CSV field would hold (null: empty; a list: a list of texts)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [str(_text(v)) for v in value if v is not None]
    return str(value)


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

    def _bad(self, kind: str, message: str) -> None:
        if self.on_error == "error":
            raise DataError(f"{message}; fix or remove the row, or set data.on_error=skip to skip and count "
                            "malformed rows")
        self.skipped.add(kind, message)

    def _label(self, text: Field) -> float | None:
        try:
            value = float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if self.spec.positive_threshold is not None:
            return float(value >= self.spec.positive_threshold) if math.isfinite(value) else None
        return value if value in (0.0, 1.0) else None

    def _csv_rows(self) -> Iterator[tuple[str, Sequence[Field] | None]]:
        """(where, fields) of each data row; fields None for a row of the wrong width (already counted)."""
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            header = next(reader, [])
            yield "", header
            for row in reader:
                where = f"{self.path}:{reader.line_num}"
                if len(row) != len(header):
                    self._bad("short_row" if len(row) < len(header) else "long_row",
                              f"{where}: {len(row)} fields, expected {len(header)} (the header's)")
                    yield where, None
                else:
                    yield where, row

    def _parquet_rows(self) -> Iterator[tuple[str, Sequence[Field] | None]]:
        parquet = import_pyarrow_parquet().ParquetFile(self.path)
        header = list(parquet.schema_arrow.names)
        yield "", header
        number = 0
        for batch in parquet.iter_batches(batch_size=65536):
            values = [[_text(v) for v in column.to_pylist()] for column in batch.columns]
            for row in zip(*values, strict=True):
                number += 1
                yield f"{self.path}: row {number}", row

    def _read(self) -> tuple[list[float], list[list[float]], list[list[list[int]]]]:
        """Labels, dense values and categorical bags (64-bit values) of the valid rows."""
        labels: list[float] = []
        dense: list[list[float]] = []
        bags: list[list[list[int]]] = []
        rows = self._csv_rows() if self.format == "csv" else self._parquet_rows()
        _, header = next(rows)
        columns = [self.spec.label, *(d.column for d in self.spec.dense), *(s.column for s in self.spec.sparse)]
        absent = [c for c in dict.fromkeys(columns) if c not in header]
        if absent:
            raise DataError(f"{self.path}: the table has no columns {absent}; it has {list(header)}: fix the feature "
                            "spec (data.spec) or, without one, set data.label or map features to columns with "
                            "data.columns.<feature>=<column>")
        label_at = header.index(self.spec.label)
        dense_at = [(d, header.index(d.column)) for d in self.spec.dense]
        sparse_at = [(s, header.index(s.column)) for s in self.spec.sparse]
        for where, row in rows:
            if row is None:
                continue
            label = self._label(row[label_at])
            if label is None:
                spec = self.spec
                rule = "0 or 1" if spec.positive_threshold is None else f">= {spec.positive_threshold} is positive"
                self._bad("bad_label", f"{where}: column {spec.label}: {row[label_at]!r} is not a label ({rule})")
                continue
            values = self._dense(row, dense_at, where)
            if values is None:
                continue
            row_bags = self._bags(row, sparse_at, where)
            if row_bags is None:
                continue
            labels.append(label)
            dense.append(values)
            bags.append(row_bags)
        return labels, dense, bags

    def _dense(self, row: Sequence[Field], dense_at: list, where: str) -> list[float] | None:
        values = []
        for d, at in dense_at:
            text = row[at]
            try:
                value = float(text) if text else 0.0  # type: ignore[arg-type]
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                self._bad("bad_dense", f"{where}: column {d.column}: {text!r} is not a finite number")
                return None
            values.append(value)
        return values

    def _bags(self, row: Sequence[Field], sparse_at: list, where: str) -> list[list[int]] | None:
        out = []
        for s, at in sparse_at:
            field = row[at]
            texts = field if isinstance(field, list) else (field.split(s.separator) if s.separator else [field])
            try:
                out.append([parse_value(t, s.dtype) for t in texts if t])
            except ValueError:
                bad = next(t for t in texts if t and not _parses(t, s.dtype))
                self._bad("bad_categorical", f"{where}: column {s.column}: {bad!r} is not a {s.dtype} value")
                return None
        return out

    def setup(self) -> None:
        if self.columns is not None:
            return
        labels, dense, bags = self._read()
        if not labels:
            raise DataError(f"{self.path}: no valid rows. " + self.skipped.summary(self.path))
        n, num_sparse = len(labels), len(self.spec.sparse)
        self.num_train = n - int(round(n * self.val_fraction))
        multi = any(s.separator for s in self.spec.sparse) or any(len(b) > 1 for row in bags for b in row)
        width = max((len(b) for row in bags for b in row), default=1) if multi else 1
        raw = np.zeros((n, num_sparse, max(width, 1)), dtype=np.uint64)
        present = np.zeros(raw.shape, dtype=bool)
        for i, row in enumerate(bags):
            for j, bag in enumerate(row):
                raw[i, j, : len(bag)] = bag
                present[i, j, : len(bag)] = True
        ids = np.full(raw.shape, -1, dtype=np.int64)
        for j, s in enumerate(self.spec.sparse):
            values, has = raw[:, j], present[:, j]
            keep = has.copy()
            keep[~has.any(axis=1), 0] = True  # a missing field is a bag of one id: row 0
            if s.mapping == "modulo":
                mapped = modulo_ids(values, ~has, self.table_rows[s.feature])
            else:
                vocab = Vocabulary.build(values[: self.num_train][has[: self.num_train]], s.vocab_threshold,
                                         capacity=self.table_rows[s.feature])
                mapped = vocab.lookup(values, ~has)
            ids[:, j] = np.where(keep, mapped, -1)
        values = np.array(dense, dtype=np.float64).reshape(n, len(self.spec.dense))
        for k, d in enumerate(self.spec.dense):
            if d.transform == "log1p":
                values[:, k] = np.log1p(np.maximum(values[:, k], 0))
        self.columns = Columns(dense=values.astype(np.float32), ids=ids if multi else ids[:, :, 0],
                               labels=np.array(labels, dtype=np.float32))

    def report(self) -> dict[str, float]:
        columns = self._columns()
        return {"data/rows_train": self.num_train, "data/rows_val": len(columns) - self.num_train,
                **self.skipped.metrics()}

    def summary(self) -> str:
        columns = self._columns()
        return (f"{self.path}: {len(columns)} valid rows: {self.num_train} for training, "
                f"{len(columns) - self.num_train} for validation; "
                + self.skipped.summary(self.path).removeprefix(f"{self.path}: "))


def _parses(text: str, dtype: str) -> bool:
    try:
        parse_value(text, dtype)
    except ValueError:
        return False
    return True

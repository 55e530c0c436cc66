"""Any CSV table with a header row as click data: data kind ``tabular`` (a feature spec in the config).

The config's features name the columns: each dense feature reads the column of the same name
(or the one ``columns`` maps it to) as a float (empty: 0) through ``dense_transform`` (``none`` or
``log1p``: ``log(1 + max(x, 0))``); each sparse feature reads its column as text: empty is missing
(row 0), and with ``multi_value_separator`` a field is a bag of values (``Comedy|Drama``). Text
values get a stable 64-bit hash (BLAKE2b: the same id in every run and file), then table rows by
modulo or by a vocabulary of the training rows (``recframe.data.categorical``). The label column
is 0/1, or positive when ``>= positive_threshold`` (ratings). The last ``val_fraction`` of rows
validate.

Malformed rows (wrong number of fields, a dense value that is not a finite number, a bad label)
are skipped and counted per kind, or stop the run naming file, line and column
(``on_error``), as for Criteo. The file is read with Python's ``csv`` module (quoting works):
correct first, about 10^5 rows/s; Parquet is not supported yet.

Example:
    >>> source = TabularSource("ratings.csv", label="rating", dense_names=[], sparse_names=["user_id", "genres"],
    ...                        table_rows={"user_id": 1000, "genres": 30}, batch_size=256, positive_threshold=4,
    ...                        multi_value_separator="|")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np

from recframe.data.arrays import Columns, InMemorySource
from recframe.data.categorical import Vocabulary, modulo_ids
from recframe.data.report import DataError, SkipReport

KINDS = ("short_row", "long_row", "bad_label", "bad_dense")
DENSE_TRANSFORMS = ("none", "log1p")


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process and run (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def read_header(path: str | Path, delimiter: str = ",") -> list[str]:
    """The column names of a CSV file's first row."""
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


class TabularSource(InMemorySource):
    """A CSV file with a header, read into memory; the last ``val_fraction`` of rows validate.

    Args:
        path: the CSV file.
        label: the label column.
        dense_names: dense features, in order.
        sparse_names: sparse features, in KJT key order.
        table_rows: rows of the table behind each sparse feature.
        batch_size: samples per batch per rank.
        columns: feature name -> column name where they differ.
        delimiter: the field separator.
        positive_threshold: label = value >= it (None: the label column holds 0 or 1).
        dense_transform: ``none`` or ``log1p``.
        multi_value_separator: splits categorical fields into bags ("" : one value per field).
        id_mapping: ``modulo`` or ``vocab``.
        vocab_threshold: ``vocab``: minimum count in the training rows for a row of its own.
        val_fraction: the last fraction of rows used for validation.
        shuffle: shuffle the training rows every epoch.
        seed: seed of the shuffles.
        on_error: ``skip`` or ``error`` for malformed rows.
        max_examples: malformed rows described per kind.
    """

    def __init__(self, path: str, label: str, dense_names: list[str], sparse_names: list[str],
                 table_rows: dict[str, int], batch_size: int, columns: dict[str, str] | None = None,
                 delimiter: str = ",", positive_threshold: float | None = None, dense_transform: str = "log1p",
                 multi_value_separator: str = "", id_mapping: str = "modulo", vocab_threshold: int = 1,
                 val_fraction: float = 0.1, shuffle: bool = True, seed: int = 0, on_error: str = "skip",
                 max_examples: int = 5) -> None:
        if dense_transform not in DENSE_TRANSFORMS:
            raise ValueError(f"TabularSource: dense_transform={dense_transform!r}; choose one of {DENSE_TRANSFORMS}")
        self.path, self.label = path, label
        self.dense_names, self.sparse_names = list(dense_names), list(sparse_names)
        self.keys = self.sparse_names  # the KJT keys
        self.table_rows = {n: int(table_rows[n]) for n in sparse_names}
        self.column_of = {n: (columns or {}).get(n, n) for n in self.dense_names + self.sparse_names}
        self.batch_size, self.delimiter, self.positive_threshold = batch_size, delimiter, positive_threshold
        self.dense_transform, self.separator = dense_transform, multi_value_separator
        self.id_mapping, self.vocab_threshold, self.val_fraction = id_mapping, vocab_threshold, val_fraction
        self.shuffle, self.seed, self.on_error = shuffle, seed, on_error
        self.skipped = SkipReport(KINDS, max_examples)
        self.columns: Columns | None = None
        self.num_train = 0

    def _bad(self, kind: str, message: str) -> None:
        if self.on_error == "error":
            raise DataError(f"{message}; fix or remove the row, or set data.on_error=skip to skip and count "
                            "malformed rows")
        self.skipped.add(kind, message)

    def _label(self, text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            return None
        if self.positive_threshold is not None:
            return float(value >= self.positive_threshold) if math.isfinite(value) else None
        return value if value in (0.0, 1.0) else None

    def _read(self) -> tuple[list[float], list[list[float]], list[list[list[int]]]]:
        """Labels, dense values and hashed categorical bags of the valid rows."""
        labels: list[float] = []
        dense: list[list[float]] = []
        bags: list[list[list[int]]] = []
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            header = next(reader, [])
            absent = [c for c in [self.label, *self.column_of.values()] if c not in header]
            if absent:
                raise DataError(f"{self.path}:1: the header has no columns {absent}; it has {header}: set data.label "
                                "or map features to columns with data.columns.<feature>=<column>")
            at = {name: header.index(column) for name, column in self.column_of.items()}
            label_at, width = header.index(self.label), len(header)
            for row in reader:
                where = f"{self.path}:{reader.line_num}"
                if len(row) != width:
                    self._bad("short_row" if len(row) < width else "long_row",
                              f"{where}: {len(row)} fields, expected {width} (the header's)")
                    continue
                label = self._label(row[label_at])
                if label is None:
                    rule = "0 or 1" if self.positive_threshold is None else f">= {self.positive_threshold} is positive"
                    self._bad("bad_label", f"{where}: column {self.label}: {row[label_at]!r} is not a label ({rule})")
                    continue
                values = []
                for name in self.dense_names:
                    text = row[at[name]]
                    try:
                        value = float(text) if text else 0.0
                    except ValueError:
                        value = math.nan
                    if not math.isfinite(value):
                        column = self.column_of[name]
                        self._bad("bad_dense", f"{where}: column {column}: {text!r} is not a finite number")
                        break
                    values.append(value)
                else:
                    labels.append(label)
                    dense.append(values)
                    bags.append([[stable_hash(v) for v in (row[at[n]].split(self.separator) if self.separator
                                                           else [row[at[n]]]) if v] for n in self.sparse_names])
        return labels, dense, bags

    def setup(self) -> None:
        if self.columns is not None:
            return
        labels, dense, bags = self._read()
        if not labels:
            raise DataError(f"{self.path}: no valid rows. " + self.skipped.summary(self.path))
        n, num_sparse = len(labels), len(self.sparse_names)
        self.num_train = n - int(round(n * self.val_fraction))
        width = max((len(b) for row in bags for b in row), default=1) if self.separator else 1
        raw = np.zeros((n, num_sparse, max(width, 1)), dtype=np.uint64)
        present = np.zeros(raw.shape, dtype=bool)
        for i, row in enumerate(bags):
            for j, bag in enumerate(row):
                raw[i, j, : len(bag)] = bag
                present[i, j, : len(bag)] = True
        ids = np.full(raw.shape, -1, dtype=np.int64)
        for j, name in enumerate(self.sparse_names):
            values, has = raw[:, j], present[:, j]
            keep = has.copy()
            keep[~has.any(axis=1), 0] = True  # a missing field is a bag of one id: row 0
            if self.id_mapping == "modulo":
                mapped = modulo_ids(values, ~has, self.table_rows[name])
            else:
                vocab = Vocabulary.build(values[: self.num_train][has[: self.num_train]], self.vocab_threshold,
                                         capacity=self.table_rows[name])
                mapped = vocab.lookup(values, ~has)
            ids[:, j] = np.where(keep, mapped, -1)
        transform = np.log1p(np.maximum(np.array(dense, dtype=np.float64), 0)) if self.dense_transform == "log1p" \
            else np.array(dense, dtype=np.float64)
        self.columns = Columns(dense=transform.astype(np.float32).reshape(n, len(self.dense_names)),
                               ids=ids if self.separator else ids[:, :, 0],
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

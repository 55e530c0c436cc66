"""Any CSV, Parquet or libsvm table as click data: data kind ``tabular``, described by a feature spec.

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

Formats: CSV with a header row (Python's ``csv`` module: quoting works), Parquet (pyarrow,
the optional extra ``recframe[parquet]``) and libsvm, chosen by ``format`` (``auto``: by the file suffix,
``.parquet``/``.pq`` is Parquet, ``.libsvm``/``.svm``/``.ffm`` libsvm). A libsvm line is ``label
field:id:value ...`` (libffm) or ``label key:value ...``: the first part of an entry names its column; a
categorical feature reading it gets the ``id`` (``key:value``: the value; several entries: a bag; the value of
a ``field:id:value`` entry is not used), a dense feature its ``value`` (no entry: 0); the label is the first
token, read as the spec's label column (one; ``-1``/``+1`` labels: ``positive_threshold: 0.5``); see
``recframe.data.table_files.read_libsvm_table``. Fields are parsed column by column
(``recframe.data.table_parse``).

Malformed rows (a CSV row with another number of fields than the header, a libsvm entry that is not
``field:id:value`` nor ``key:value`` or a dense column's second entry in a line: ``bad_entry``, a CSV row with
an unclosed quote: ``unclosed_quote``, counted on its first line, the lines it ran over read again; a line
that is not UTF-8: ``bad_encoding``; a field longer than ``csv.field_size_limit()``: ``huge_field``; a dense
value that is not a finite number, a categorical value that is not of its dtype, a bad label, a field with
more values than its feature's ``max_values``: ``long_bag``, as bags are padded to the longest one kept) are
skipped and counted per kind, or stop the run naming file, line (CSV, libsvm) or row (Parquet) and column
(``on_error``). A dense value is checked after its transform and the cast to float32, the training dtype
(``1e39`` is a finite float64 but not a float32: ``bad_dense``). A CSV row (a libsvm line) ending on a last
line without its newline may have been cut inside a field (an interrupted copy), so it is never read as a row:
``truncated``. A UTF-8 byte-order mark at the start of a CSV file (spreadsheet exports write one) is dropped.

Example:
    >>> from recframe.data.spec import SpecDefaults, spec_from_config
    >>> spec = spec_from_config([], ["user_id", "genres"], {}, SpecDefaults(label="rating", positive_threshold=4,
    ...                         multi_value_separator="|"))
    >>> source = TabularSource("ratings.csv", spec, table_rows={"user_id": 1000, "genres": 30},
    ...                        batch_size=256)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from recframe import storage
from recframe.config.resolve import feature_rows
from recframe.data.arrays import Columns
from recframe.data.categorical import Vocabulary, modulo_ids
from recframe.data.in_memory import InMemorySource
from recframe.data.report import DataError, SkipReport
from recframe.data.source import DATA_SOURCES
from recframe.data.spec import FeatureSpec, tabular_spec
from recframe.data.table_files import (
    RawTable,
    import_pyarrow_parquet,
    read_csv_table,
    read_libsvm_table,
    read_parquet_table,
)
from recframe.data.table_parse import (
    Bags,
    bag_size,
    first_bad_value,
    float_or_nan,
    parse_bags,
    parse_floats,
    stable_hash,
)
from recframe.vocab import DenseTransform, IdMapping, OnError, TableFormat

__all__ = ["TabularSource", "read_header", "stable_hash", "table_format"]

KINDS = ("short_row", "long_row", "unclosed_quote", "bad_encoding", "huge_field", "bad_label", "bad_dense",
         "bad_categorical", "long_bag", "truncated", "bad_entry")
SUFFIXES = {".parquet": TableFormat.parquet, ".pq": TableFormat.parquet, ".libsvm": TableFormat.libsvm,
            ".svm": TableFormat.libsvm, ".ffm": TableFormat.libsvm}


def table_format(path: str | Path, fmt: str = "auto") -> str:
    """``csv``, ``parquet`` or ``libsvm``: ``fmt``, or by the suffix of ``path`` when ``fmt`` is ``auto``."""
    if problem := TableFormat.problem("format", fmt):
        raise ValueError(problem)
    if fmt != TableFormat.auto:
        return TableFormat(fmt)
    return SUFFIXES.get(Path(path).suffix.lower(), TableFormat.csv)


def read_header(path: str | Path, delimiter: str = ",", fmt: str = "auto") -> list[str] | None:
    """The column names of a table file: a CSV file's first row, or a Parquet file's schema (libsvm: None, its
    columns are known once every line is read)."""
    if table_format(path, fmt) == TableFormat.libsvm:
        return None
    if table_format(path, fmt) == TableFormat.parquet:
        pq = import_pyarrow_parquet()  # first: without pyarrow, the error names the extra
        with storage.open_file(storage.location(path), "rb") as raw:  # a local path or an fsspec URL
            return list(pq.read_schema(raw).names)
    try:
        with storage.open_file(storage.location(path), "rb") as raw, \
                io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:  # -sig: without a byte-order mark
            return next(csv.reader(f, delimiter=delimiter), [])
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: the header (line 1) is not UTF-8 ({e.reason}): save the file as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path}: the header (line 1) is not a CSV row ({e}): is it a CSV file?") from None


class TabularSource(InMemorySource):
    """A CSV, Parquet or libsvm table read into memory as the spec says; the last ``val_fraction`` of rows validate, or
    the rows of ``val_path`` (a table with the same columns); ``test_path``'s rows are a test set.

    Args:
        path: the CSV, Parquet or libsvm file.
        spec: what the columns are.
        table_rows: rows of the table behind each sparse feature.
        batch_size: samples per batch per rank.
        fmt: ``auto`` (by suffix), ``csv``, ``parquet`` or ``libsvm``.
        delimiter: the CSV field separator.
        val_fraction: the last fraction of rows used for validation.
        shuffle: shuffle the training rows every epoch.
        seed: seed of the shuffles.
        on_error: ``skip`` or ``error`` for malformed rows.
        max_examples: malformed rows described per kind.
        val_path: a validation table (None: the last ``val_fraction`` of ``path``'s rows validate).
        test_path: a test table, evaluated once after training (None: none).
    """

    def __init__(self, path: str, spec: FeatureSpec, table_rows: dict[str, int], batch_size: int,
                 fmt: str = "auto", delimiter: str = ",", val_fraction: float = 0.1, shuffle: bool = True,
                 seed: int = 0, on_error: str = "skip", max_examples: int = 5, val_path: str | None = None,
                 test_path: str | None = None) -> None:
        problems = spec.problems()
        if problems:
            raise ValueError(f"TabularSource: {'; '.join(problems)}")
        self.path, self.spec, self.format = path, spec, table_format(path, fmt)
        self.fmt, self.val_path, self.test_path = fmt, val_path, test_path
        self.reading = path  # the file being read (its messages name it)
        self.keys = [s.feature for s in spec.sparse]  # the KJT keys
        self.table_rows = {s.feature: int(table_rows[s.feature]) for s in spec.sparse}
        self.batch_size, self.delimiter, self.val_fraction = batch_size, delimiter, val_fraction
        self.shuffle, self.seed, self.on_error = shuffle, seed, on_error
        self.skipped = SkipReport(KINDS, max_examples)
        self.columns: Columns | None = None
        self.num_train = 0

    def _where(self, line: int) -> str:
        return f"{self.reading}: row {line}" if self.format == TableFormat.parquet else f"{self.reading}:{line}"

    def _read(self, path: str) -> tuple[np.ndarray, np.ndarray, list[Bags]]:
        """Labels, dense values and categorical bags of the valid rows of ``path`` (problems counted or raised)."""
        spec = self.spec
        self.reading, self.format = path, table_format(path, self.fmt)
        wanted = [*spec.labels, *(d.column for d in spec.dense), *(s.column for s in spec.sparse)]
        if self.format == TableFormat.libsvm:
            if len(spec.labels) != 1:
                raise DataError(f"{path}: a libsvm line has one label, the spec names {list(spec.labels)}")
            raw = read_libsvm_table(path, spec.labels[0], [d.column for d in spec.dense],
                                    [s.column for s in spec.sparse])
        elif self.format == TableFormat.csv:
            raw = read_csv_table(path, self.delimiter, wanted)
        else:
            raw = read_parquet_table(path, wanted)
        absent = [c for c in dict.fromkeys(wanted) if c not in raw.header]
        if absent:
            has = raw.header if len(raw.header) <= 40 else [*raw.header[:40], f"... ({len(raw.header)} in all)"]
            raise DataError(f"{path}: the table has no columns {absent}; it has {has}: fix the feature "
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
            if d.transform == DenseTransform.log1p:
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
        if not ok.any():
            raise DataError(f"{path}: no valid rows. " + self.skipped.summary(path))
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
        if self.on_error == OnError.error:
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
        # training, [validation], [test]: one table after the other (a vocabulary counts the training rows only)
        parts = [self._read(path) for path in (self.path, self.val_path, self.test_path) if path is not None]
        labels, dense = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
        bags = [Bags(*map(np.concatenate, zip(*((b.values, b.lengths, b.bad) for b in column), strict=True)))
                for column in zip(*(p[2] for p in parts), strict=True)]
        n, num_sparse, file_rows = labels.shape[0], len(self.spec.sparse), [p[0].shape[0] for p in parts]
        self.num_train = file_rows[0] if self.val_path else file_rows[0] - int(round(file_rows[0] * self.val_fraction))
        multi = any(s.separator for s in self.spec.sparse) or any(b.lengths.max(initial=0) > 1 for b in bags)
        width = max([int(b.lengths.max(initial=1)) for b in bags] + [1]) if multi else 1
        ids = np.full((n, num_sparse, width), -1, dtype=np.int64)
        for j, (s, b) in enumerate(zip(self.spec.sparse, bags, strict=True)):
            values, has = b.matrix(width)
            keep = has.copy()
            keep[~has.any(axis=1), 0] = True  # a missing field is a bag of one id: row 0
            if s.mapping == IdMapping.modulo:
                mapped = modulo_ids(values, ~has, self.table_rows[s.feature])
            else:
                vocab = Vocabulary.build(values[: self.num_train][has[: self.num_train]], s.vocab_threshold,
                                         capacity=self.table_rows[s.feature])
                mapped = vocab.lookup(values, ~has)
            ids[:, j] = np.where(keep, mapped, -1)
        self.split_files(Columns(dense=dense, ids=ids if multi else ids[:, :, 0], labels=labels.astype(np.float32)),
                         file_rows, self.val_path is not None, self.val_fraction)

    def report(self) -> dict[str, float]:
        return {**self.split_sizes(), **self.skipped.metrics()}

    def summary(self) -> str:
        split = self.split_summary(self.val_path, self.test_path)
        return f"{self.path}: {split}; " + self.skipped.summary(self.path).removeprefix(f"{self.path}: ")


@DATA_SOURCES.register("tabular")
def tabular_from_config(cfg: DictConfig) -> TabularSource:
    """The CSV/TSV table of ``data=tabular`` (its columns from ``data.spec``)."""
    data = cfg.data
    return TabularSource(
        str(data.path), tabular_spec(cfg), table_rows=feature_rows(cfg), batch_size=data.batch_size, fmt=data.format,
        delimiter=data.delimiter, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
        on_error=data.on_error, max_examples=data.max_reported_errors, val_path=data.val_path, test_path=data.test_path,
    )

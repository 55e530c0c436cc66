"""Finite data held in memory (or memory-mapped) as ``Columns``, split into training, validation and test rows.

The shared plumbing of the file data sources (Criteo TSV and binary, MovieLens, CSV and Parquet tables):
training batches per rank in shuffled epochs and validation batches in order (``recframe.data.arrays``).
The validation rows are the last ``val_fraction`` of the training file, or a file of their own
(``data.val_path``); a test file (``data.test_path``) is evaluated once after training.

Example:
    >>> import numpy as np
    >>> class Tiny(InMemorySource):
    ...     keys, batch_size, shuffle, seed = ["a"], 2, False, 0
    ...     def setup(self) -> None:
    ...         rows = Columns(np.zeros((9, 1), np.float32), np.arange(9)[:, None], np.zeros(9, np.float32))
    ...         self.split_files(rows, [5, 4], has_val_file=False, val_fraction=0.2)  # 5 in the file, 4 test rows
    >>> Tiny().split_sizes()
    {'data/rows_train': 4, 'data/rows_val': 1, 'data/rows_test': 4}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import IterableDataset

from recframe.data.arrays import Columns, ColumnsReader, EpochBatches, EpochPlan, IdTransform, ValBatches


class InMemorySource:
    """The shared plumbing of data sources that hold every row as ``Columns`` (Criteo TSV and binary,
    MovieLens, CSV): rows split in file order, the first ``num_train`` for training (reshuffled every
    epoch with ``seed``), the rest for validation; or, when the validation rows come from a file of their
    own (``data.val_path``), ``val_columns``; and the rows of a test file (``data.test_path``), evaluated
    once after training, ``test_columns``.

    A subclass sets, by the end of its ``setup()``: ``columns``, ``num_train`` (optionally ``val_columns``,
    ``test_columns``), and in ``__init__``:
    ``batch_size``, ``shuffle``, ``seed``, ``keys`` (the KJT keys) and ``id_transform`` (stored ids ->
    table rows, or None); optionally ``shuffle_batches`` (shuffle the order of contiguous batches, not
    the rows) and ``pin_memory`` (page-locked batches).

    Example:
        >>> # see the module docstring
    """

    columns: Columns | None
    num_train: int
    batch_size: int
    shuffle: bool
    seed: int
    keys: list[str]
    id_transform: IdTransform | None = None
    shuffle_batches: bool = False
    pin_memory: bool = False
    val_columns: Columns | None = None  # validation rows of their own file (None: the rows after num_train)
    test_columns: Columns | None = None  # test rows (a file of their own), evaluated once after training

    def setup(self) -> None:
        raise NotImplementedError

    def split_files(self, columns: Columns, file_rows: Sequence[int], has_val_file: bool, val_fraction: float) -> None:
        """Set ``columns``, ``num_train``, ``val_columns`` and ``test_columns`` from the rows of the training file,
        then (if any) the validation file and the test file, one after another in ``columns``.

        Args:
            columns: every row read, file after file.
            file_rows: rows of each file, in that order (training, [validation], [test]).
            has_val_file: the second file is the validation file (else the last ``val_fraction`` of the training
                file's rows validate, and a second file is the test file).
            val_fraction: the fraction of the training file that validates when there is no validation file.
        """
        bounds = np.cumsum([0, *file_rows])
        parts = [columns.rows(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.columns = parts[0]
        self.num_train = len(parts[0]) if has_val_file else len(parts[0]) - int(round(len(parts[0]) * val_fraction))
        self.val_columns = parts[1] if has_val_file else None
        tests = parts[2 if has_val_file else 1:]
        self.test_columns = tests[0] if tests else None

    def split_sizes(self) -> dict[str, float]:
        """Rows per split for ``report()``: ``data/rows_train``, ``data/rows_val``, ``data/rows_test`` (a test file)."""
        columns = self._columns()
        val = len(self.val_columns) if self.val_columns is not None else len(columns) - self.num_train
        out: dict[str, float] = {"data/rows_train": self.num_train, "data/rows_val": val}
        if self.test_columns is not None:
            out["data/rows_test"] = len(self.test_columns)
        return out

    def split_summary(self, val_path: str | None, test_path: str | None) -> str:
        """``8000 for training, 2000 for validation (val.csv), 500 for testing (test.csv)`` for ``summary()``.

        Args:
            val_path: the validation file (None: part of the training file).
            test_path: the test file (None: none).
        """
        sizes = self.split_sizes()
        text = f"{sizes['data/rows_train']} for training, {sizes['data/rows_val']} for validation"
        text += f" ({val_path})" if val_path is not None else ""
        return text + (f", {sizes['data/rows_test']} for testing ({test_path})" if test_path is not None else "")

    def _columns(self) -> Columns:
        self.setup()
        assert self.columns is not None
        return self.columns

    def train_dataset(self, rank: int, world_size: int, first_batch: int) -> IterableDataset:
        """This rank's training batches from position ``first_batch`` (batches it consumed)."""
        read = self._reader()  # sets up: num_train is known after it
        plan = EpochPlan(self.num_train, self.batch_size, world_size, rank, self.shuffle, self.seed,
                         by_batch=self.shuffle_batches)
        return EpochBatches(read, plan, first_batch=first_batch)

    def val_dataset(self, rank: int, world_size: int) -> IterableDataset:
        """This rank's validation batches."""
        read = self._reader()
        if self.val_columns is not None:
            return ValBatches(self._reader(self.val_columns), 0, len(self.val_columns), self.batch_size, world_size,
                              rank)
        rows = len(read.columns)
        return ValBatches(read, self.num_train, rows - self.num_train, self.batch_size, world_size, rank)

    def test_dataset(self, rank: int, world_size: int) -> IterableDataset | None:
        """This rank's test batches (None without a test file)."""
        self._columns()
        if self.test_columns is None:
            return None
        return ValBatches(self._reader(self.test_columns), 0, len(self.test_columns), self.batch_size, world_size, rank)

    def _reader(self, columns: Columns | None = None) -> ColumnsReader:
        return ColumnsReader(columns if columns is not None else self._columns(), self.keys, self.id_transform,
                             self.pin_memory)

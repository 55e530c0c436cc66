"""Categorical values -> embedding-table rows: modulo hashing or a frequency-thresholded vocabulary.

Row 0 of every table is reserved for a missing value (an empty field), in both modes:

- ``modulo``: a present value ``v`` goes to row ``1 + v % (rows - 1)``: the table size alone
  decides, nothing is learned from the data, collisions are possible.
- ``vocab``: values seen at least ``threshold`` times (counted on the training rows only) get
  their own rows ``2, 3, ...`` in order of decreasing count (ties: increasing value), so the hot
  rows come first; every other value (rare, or unseen in training) goes to row 1 (out of
  vocabulary). If the table has fewer rows than the vocabulary needs, only the most frequent
  ``rows - 2`` values keep their own rows and the others go to row 1 (``truncated`` counts them).

Example:
    >>> values = np.array([7, 7, 9, 5, 7], dtype=np.uint64)
    >>> missing = np.array([False, False, False, True, False])
    >>> modulo_ids(values, missing, rows=4).tolist()
    [2, 2, 1, 0, 2]
    >>> vocab = Vocabulary.build(values[~missing], threshold=1)
    >>> vocab.lookup(np.array([7, 9, 8], dtype=np.uint64), np.zeros(3, bool)).tolist(), vocab.num_rows
    ([2, 3, 1], 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING_ID = 0  # the row of an empty field, in every mode
OOV_ID = 1  # vocab mode: the row of values outside the vocabulary


def modulo_ids(values: np.ndarray, missing: np.ndarray, rows: int) -> np.ndarray:
    """Rows ``1 + v % (rows - 1)`` for present values, ``0`` for missing ones (int64).

    Args:
        values: uint64 (or non-negative int64) values.
        missing: bool, same shape: True where the field was empty.
        rows: the table's rows (>= 2).
    """
    if rows < 2:
        raise ValueError(f"modulo_ids: a table needs at least 2 rows (row 0 is for missing values), got {rows}")
    ids = (values.astype(np.uint64, copy=False) % np.uint64(rows - 1)).astype(np.int64) + 1
    ids[missing] = MISSING_ID
    return ids


def count_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted uint64) and their counts (int64)."""
    uniq, counts = np.unique(values.astype(np.uint64, copy=False), return_counts=True)
    return uniq, counts.astype(np.int64)


def merge_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge several ``(values, counts)`` pairs into one (values sorted, counts summed)."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, np.bincount(inverse.reshape(-1), weights=counts, minlength=uniq.size).astype(np.int64)


@dataclass
class Vocabulary:
    """A feature's vocabulary: value -> row (``2 + rank by decreasing count``).

    Args:
        sorted_values: the vocabulary's values, sorted (uint64), for lookup.
        sorted_ids: the row of each of ``sorted_values``.
        distinct: distinct values counted when building (the vocabulary size before the threshold).
        truncated: values over the threshold that did not fit the row capacity.
    """

    sorted_values: np.ndarray
    sorted_ids: np.ndarray
    distinct: int = 0
    truncated: int = 0

    @property
    def num_rows(self) -> int:
        """Rows a table needs for this vocabulary (missing + out-of-vocabulary + one per value)."""
        return 2 + int(self.sorted_values.size)

    @staticmethod
    def from_counts(values: np.ndarray, counts: np.ndarray, threshold: int = 1,
                    capacity: int | None = None) -> Vocabulary:
        """The vocabulary of values counted ``threshold`` times or more.

        Args:
            values: distinct values (uint64).
            counts: how often each was seen.
            threshold: the minimum count for a row of its own.
            capacity: the table's rows (None: unbounded); keeps the ``capacity - 2`` most frequent.
        """
        keep = counts >= max(threshold, 1)
        kept_values, kept_counts = values[keep], counts[keep]
        order = np.lexsort((kept_values, -kept_counts))  # decreasing count, then increasing value
        truncated = 0
        if capacity is not None:
            if capacity < 2:
                raise ValueError(f"Vocabulary: tables need 2 rows or more (missing, out of vocabulary), got {capacity}")
            truncated = max(order.size - (capacity - 2), 0)
            order = order[: capacity - 2]
        chosen = kept_values[order]
        ids = np.arange(2, 2 + chosen.size, dtype=np.int64)
        by_value = np.argsort(chosen, kind="stable")
        return Vocabulary(chosen[by_value], ids[by_value], distinct=int(values.size), truncated=int(truncated))

    @staticmethod
    def build(values: np.ndarray, threshold: int = 1, capacity: int | None = None) -> Vocabulary:
        """The vocabulary of present (non-missing) ``values``; see ``from_counts``."""
        uniq, counts = count_values(values)
        return Vocabulary.from_counts(uniq, counts, threshold, capacity)

    def lookup(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Rows (int64) of ``values``: their vocabulary row, ``OOV_ID`` if absent, ``MISSING_ID`` if missing."""
        values = values.astype(np.uint64, copy=False)
        if self.sorted_values.size == 0:
            ids = np.full(values.shape, OOV_ID, dtype=np.int64)
        else:
            at = np.minimum(np.searchsorted(self.sorted_values, values), self.sorted_values.size - 1)
            ids = np.where(self.sorted_values[at] == values, self.sorted_ids[at], OOV_ID)
        ids[missing] = MISSING_ID
        return ids

"""The id law of a feature: how many of its ids land in a block of rows, and how many distinct rows they touch.

The step simulator (``simulate.py``) counts a shard's ids and updated rows from the data's id law
instead of assuming ids spread evenly over rows (the cost model's assumption). The law is the
synthetic data's (``recframe.data.synthetic_hash.zipf_ids``): ``P(id = k) ~ (k + 1) ** -s`` over
``[0, R)`` by the inverse CDF of the continuous power law on ``[1, R + 1)``, floored, so that

    P(id < k) = g(k + 1) / g(R + 1),  g(y) = (y ** (1 - s) - 1) / (1 - s)  (log y for s = 1),

exactly (``s = 0`` is uniform: ``k / R``). Id 0 is the hottest: with ``s = 1.05`` and 40M rows the
first 1/64 of the rows draws 83% of the ids.

Distinct rows among ``n`` ids drawn from the law (what a backward pass updates): each row ``k`` is
touched with probability ``1 - (1 - p_k) ** n ~ 1 - exp(-n p_k)``; the sum runs over bins of rows
(geometric, plus every shard boundary) inside which ``p_k`` is taken as constant.

Example:
    >>> law = IdLaw(0.0)
    >>> law.mass(100, [0, 50], [50, 100]).round(6).tolist()  # uniform: half the ids in each half
    [0.5, 0.5]
    >>> round(float(law.expected_unique(1000, [0], [1000], draws=1000)[0]))  # 1000 (1 - 1/e)
    632
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GRID_POINTS = 4096  # geometric bin edges over a table's rows (plus its shard boundaries) for the distinct-row sum


class IdLaw:
    """A Zipf id law over the rows of a table (``exponent`` 0: uniform).

    Args:
        exponent: the Zipf exponent ``s >= 0`` (``data.zipf_exponent``).

    Example:
        >>> round(float(IdLaw(1.05).mass(40_000_000, [0], [625_000])[0]), 2)
        0.83
    """

    def __init__(self, exponent: float) -> None:
        if exponent < 0:
            raise ValueError(f"the Zipf exponent must be >= 0, got {exponent}")
        self.exponent = exponent

    def _g(self, y: np.ndarray) -> np.ndarray:
        a = 1.0 - self.exponent
        if abs(a) < 1e-9:
            return np.log(y)
        return np.expm1(a * np.log(y)) / a

    def below(self, rows: int, k: Sequence[int] | np.ndarray) -> np.ndarray:
        """``P(id < k)`` for a table of ``rows`` rows, for each ``k`` in ``[0, rows]``.

        Args:
            rows: the table's rows ``R``.
            k: row numbers.
        """
        k = np.clip(np.asarray(k, dtype=np.float64), 0, rows)
        return self._g(k + 1.0) / self._g(np.float64(rows) + 1.0)

    def _g_inverse(self, v: np.ndarray) -> np.ndarray:
        a = 1.0 - self.exponent
        if abs(a) < 1e-9:
            return np.exp(v)
        return np.exp(np.log1p(a * v) / a)

    def balanced_sizes(self, rows: int, shards: int, draws: float | None = None,
                       distinct_weight: float | None = None) -> list[int]:
        """Rows of ``shards`` consecutive blocks (from row 0) holding equal shares of the ids, each at least one row.

        Block ``i`` ends at the row ``k`` where ``P(id < k)`` reaches ``(i + 1) / shards`` (rounded), pushed up so
        that every block keeps a row; a row hotter than ``1 / shards`` of the ids gets a block of its own (with
        ``s = 1.05`` and 40M rows, row 0 draws 5.8% of the ids: more than a 512th). Uniform: ``even_split``'s
        sizes, up to the order of the one-row differences. With ``draws``: blocks of equal expected distinct rows
        among ``draws`` ids instead (what a rank sends a routed shard, each distinct id once: hot blocks get more
        rows, as their ids repeat). With ``draws`` and ``distinct_weight`` ``w``: blocks of equal ``ids + w x distinct
        rows`` among ``draws`` ids, a pooled row shard's work (each id read once, each distinct row's weights and
        state read and written in the update: cold blocks, whose ids are nearly all distinct, get fewer ids).

        Args:
            rows: the table's rows ``R`` (at least ``shards``).
            shards: the number of blocks.
            draws: balance the distinct rows among this many ids (None: balance the ids).
            distinct_weight: with ``draws``, balance ``ids + distinct_weight x distinct rows`` instead.

        Example:
            >>> IdLaw(0.0).balanced_sizes(10, 3), IdLaw(1.05).balanced_sizes(1000, 4)
            ([3, 4, 3], [4, 19, 117, 860])
            >>> IdLaw(1.05).balanced_sizes(1000, 4, draws=100)  # ~16 distinct rows of the 100 ids in each
            [21, 60, 199, 720]
            >>> IdLaw(1.05).balanced_sizes(1000, 4, draws=100, distinct_weight=3.0)  # between the two
            [12, 45, 177, 766]
        """
        if not 1 <= shards <= rows:
            raise ValueError(f"cannot cut {rows} rows into {shards} blocks of at least one row")
        q = np.arange(shards + 1, dtype=np.float64) / shards
        if draws is None:
            ends = np.rint(self._g_inverse(q * self._g(np.float64(rows) + 1.0)) - 1.0)
        else:  # invert the cumulative expected distinct rows, on a fine grid (exact at every integer below 64)
            grid = np.unique(np.concatenate([np.geomspace(1.0, rows + 1.0, 8 * GRID_POINTS).astype(np.int64) - 1,
                                             np.arange(min(rows, 64) + 1), [rows]]))
            grid = grid[(grid >= 0) & (grid <= rows)]
            work = self.expected_unique(rows, grid[:-1], grid[1:], draws)
            if distinct_weight is not None:
                work = draws * np.diff(self.below(rows, grid)) + distinct_weight * work
            cumulative = np.concatenate([[0.0], np.cumsum(work)])
            ends = np.rint(np.interp(q * cumulative[-1], cumulative, grid.astype(np.float64)))
        ends[0], ends[-1] = 0, rows
        gap = np.clip(ends - np.arange(shards + 1), 0, rows - shards)  # ends[i] - i: non-decreasing <=> >= 1 row each
        ends = np.maximum.accumulate(gap) + np.arange(shards + 1)
        ends[-1] = rows
        return np.diff(ends).astype(np.int64).tolist()

    def mass(self, rows: int, starts: Sequence[int], ends: Sequence[int]) -> np.ndarray:
        """Share of the ids in rows ``[starts[i], ends[i])``, for each ``i``.

        Args:
            rows: the table's rows.
            starts: first rows of the blocks.
            ends: ends of the blocks (exclusive).
        """
        return self.below(rows, ends) - self.below(rows, starts)

    def expected_unique(self, rows: int, starts: Sequence[int], ends: Sequence[int], draws: float) -> np.ndarray:
        """Expected distinct rows of each block ``[starts[i], ends[i])`` among ``draws`` ids drawn from the law.

        Args:
            rows: the table's rows.
            starts: first rows of the blocks.
            ends: ends of the blocks (exclusive).
            draws: ids drawn over the whole table (e.g. the global batch's ``G x L``).
        """
        grid = np.unique(np.geomspace(1.0, rows + 1.0, GRID_POINTS).astype(np.int64) - 1)
        edges = np.unique(np.concatenate([grid, np.asarray(starts, np.int64), np.asarray(ends, np.int64),
                                          np.arange(min(rows, 64) + 1), [rows]]))
        edges = edges[(edges >= 0) & (edges <= rows)]
        sizes = np.diff(edges).astype(np.float64)
        masses = np.diff(self.below(rows, edges))
        touched = sizes * -np.expm1(-draws * masses / np.maximum(sizes, 1.0))
        cumulative = np.concatenate([[0.0], np.cumsum(touched)])
        return cumulative[np.searchsorted(edges, ends)] - cumulative[np.searchsorted(edges, starts)]

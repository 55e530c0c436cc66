"""column_wise: blocks of columns, one per rank; every shard gets every id of the feature; blocks concatenated.

Exact for element-wise optimizers (sgd, adagrad, adam). Not exact for ``rowwise_adagrad`` /
``rowwise_adam`` (each shard's per-row state is the mean over its own columns, not over the
whole row) nor ``lamb`` (its trust ratio uses row norms): those train, but differ from the
unsharded table, so the planner's auto never column-shards them (a constraint or a fixed
``sharding=column_wise`` still can, knowingly).

Example:
    >>> COLUMN_WISE.is_exact("adam"), COLUMN_WISE.is_exact("rowwise_adagrad")
    (True, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recframe.distributed.sharding.base import Axis, Combine, PlacementQuery, ShardingRule
from recframe.vocab import OptimizerName, ShardingType

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


class ColumnWise(ShardingRule):
    """Column blocks on ``ranks`` (``shard_sizes`` columns each, or an even split).

    Example:
        >>> COLUMN_WISE.bounds([0, 1], [32, 32], rows=100, cols=64)
        [(0, 32), (32, 64)]
    """

    kind = ShardingType.column_wise
    axis = Axis.columns
    combine = Combine.concat
    exact_for = frozenset({OptimizerName.sgd, OptimizerName.adagrad, OptimizerName.adam})

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """The least-loaded ``n`` ranks of the pool for each ``n`` of ``shard_counts``; auto: exact optimizers only."""
        if not (query.explicit or self.is_exact(query.optimizer)):
            return [], []
        return [sorted(query.by_load[:n]) for n in self.shard_counts(query)], []

    def shard_counts(self, query: PlacementQuery) -> list[int]:
        """Numbers of column shards to try: 2, 4, 8, ... and the pool size, each shard at least
        ``min_column_shard_dim`` wide (a fixed column_wise: the whole pool, up to one rank per column).

        Args:
            query: the table and its ranks.
        """
        pool = len(query.pool)
        if query.fixed:
            return [min(pool, query.dim)]
        counts = {n for n in (2**k for k in range(1, pool.bit_length())) if n <= pool} | ({pool} if pool > 1 else set())
        counts = {n for n in counts if query.dim // n >= query.min_column_shard_dim}
        return sorted(counts) if counts or not query.explicit else [min(pool, query.dim)]

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        t = sheet.table
        for rank, (start, end) in zip(ranks, bounds, strict=True):
            cols = end - start
            sheet.shard(rank, t.rows, cols, sheet.ids_all, sheet.ids_all)
            sheet.input_dist(rank, t.ids_per_sample)
            sheet.output_all_to_all(rank, cols)


COLUMN_WISE = ColumnWise()

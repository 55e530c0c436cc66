"""row_wise: contiguous blocks of rows, one per rank; each id goes to the shard holding its row.

Each shard pools its own ids into partial sums, which travel back in the output all-to-all and
are added on the sample's rank (a reduce-scatter); a mean table's shards pool sums and the sum is
divided by the bag's full size after the addition. Exact for every optimizer: each row's state
lives whole on one shard.

Example:
    >>> [(s.rank, s.offsets, s.sizes) for s in ROW_WISE.shards("t", 5, 8, [1, 0], [(0, 3), (3, 5)], 2)]
    [(1, (0, 0), (3, 8)), (0, (3, 0), (2, 8))]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recframe.distributed.sharding.base import Axis, Combine, PlacementQuery, ShardingRule
from recframe.vocab import ShardingType

BATCHED_SHARDS = 64  # more row shards than this are costed in one vectorized pass (fewer: shard by shard, as before)

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


def add_row_shards(sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]],
                   groups: list[tuple[int, ...]] | None = None) -> None:
    """Cost terms of row blocks whose shards exchange pooled partial sums with every rank (one flat all-to-all),
    or, with ``groups``, reduce them inside each group first (``CostSheet.node_reduced_output``).

    A shard serves its block's share of the ids (``TableWorkload.row_share``: ``R_s / R`` of them when ids spread
    evenly over the rows).

    Args:
        sheet: the table's cost sheet.
        ranks: the shards' ranks.
        bounds: the shards' rows.
        groups: the shards' ranks that reduce their partial sums among themselves before sending them (one node
            each: ``ShardingRule.reduce_groups``); None or empty: none do.

    Example:
        >>> add_row_shards(sheet, [0, 1], [(0, 500), (500, 1000)])  # doctest: +SKIP
    """
    t = sheet.table
    if len(ranks) > BATCHED_SHARDS and not groups:  # the same terms for every shard at once (equal up to
        # rounding)
        sheet.row_shards(ranks, bounds)
        return
    skewed = t.id_exponent > 0
    shares = t.row_share([start for start, _ in bounds], [end for _, end in bounds]).tolist() if skewed else bounds
    for rank, (start, end), share in zip(ranks, bounds, shares, strict=True):
        rows = end - start
        if skewed:
            ids, sent = sheet.ids_all * share, t.ids_per_sample * share
        else:  # rows / R, in the order the former cost model multiplied (the tests compare bit for bit)
            ids, sent = sheet.ids_all * rows / t.rows, t.ids_per_sample * rows / t.rows
        sheet.shard(rank, rows, t.dim, ids, ids)
        sheet.input_dist(rank, sent)
        if not groups:
            sheet.output_all_to_all(rank, t.dim)
    if groups:
        sheet.node_reduced_output(ranks, groups)


class RowWise(ShardingRule):
    """Row blocks on ``ranks`` (``shard_sizes`` rows each, or an even split); partial sums added.

    Example:
        >>> ROW_WISE.shard_pooling("mean"), ROW_WISE.combine.value
        ('sum', 'add')
    """

    kind = ShardingType.row_wise
    axis = Axis.rows
    combine = Combine.add

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """All ranks of the pool (auto: at least two); a table with fewer rows than ranks: its least-loaded ranks."""
        if not (query.explicit or len(query.pool) > 1):
            return [], []
        return [query.pool if query.rows >= len(query.pool) else sorted(query.by_load[:query.rows])], []

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        add_row_shards(sheet, ranks, bounds)


ROW_WISE = RowWise()

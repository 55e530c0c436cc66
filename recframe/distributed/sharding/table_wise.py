"""table_wise: one rank holds the whole table and looks it up for the global batch; outputs go back by all-to-all.

Example:
    >>> [(s.rank, s.sizes) for s in TABLE_WISE.shards("t", 10, 8, [1], [(0, 10)], world_size=2)]
    [(1, (10, 8))]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recframe.distributed.sharding.base import Combine, PlacementQuery, ShardingRule
from recframe.vocab import ShardingType

CANDIDATES = 64  # table_wise candidates per table in a larger pool: its least-loaded ranks with room

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


class TableWise(ShardingRule):
    """One shard, the whole table, on ``ranks[0]``; exact for every optimizer.

    Cost: the owner looks up and updates the ids of all ``G`` samples, receives every rank's ids
    and exchanges ``D`` columns of pooled output (and their gradients) with every rank.

    Example:
        >>> TABLE_WISE.problems("table 't' (table_wise)", [0, 1])
        ["table 't' (table_wise): table_wise needs exactly one rank, got [0, 1]"]
    """

    kind = ShardingType.table_wise
    axis = None
    combine = Combine.concat

    def problems(self, where: str, ranks: list[int]) -> list[str]:
        return [] if len(ranks) == 1 else [f"{where}: table_wise needs exactly one rank, got {ranks}"]

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """Each of the ``CANDIDATES`` least-loaded ranks of the pool with room (every rank of a pool that small),
        in rank order: the planner costs each candidate in O(world), so all ranks of a large world would be
        O(world^2) per table."""
        if len(query.pool) <= CANDIDATES:
            return [[r] for r in query.pool], []
        return [[r] for r in sorted(query.least_loaded_with_room(CANDIDATES))], []

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        t, rank = sheet.table, ranks[0]
        sheet.shard(rank, t.rows, t.dim, sheet.ids_all, sheet.ids_all)
        sheet.input_dist(rank, t.ids_per_sample)
        sheet.output_all_to_all(rank, t.dim)


TABLE_WISE = TableWise()

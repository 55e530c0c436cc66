"""data_parallel: every rank holds the whole table (its placement lists all ranks).

Run as TorchRec runs data-parallel tables (``recframe.distributed.replicas``): each rank looks up
only its own samples' ids in its replica (its features have no slot in the input all-to-all, and its
pooled output stays on the rank, outside the output all-to-all); in backward each rank forms its
replica's dense row gradient and a per-row lookup count, one all-reduce sums them over the ranks,
and every replica applies the same fused update (the kernel's own) to the rows the global batch
touched, with the summed gradient: replicas stay bit-identical, and training equals the unsharded
table's for every optimizer (lazy ones too: untouched rows stay untouched). For small tables only
(the auto rule: at most ``data_parallel_max_rows`` rows). The cost model counts it so
(``CostSheet.replicas``): per replica the rank's own lookups, the global batch's touched rows'
update, the replica plus its gradient buffer in memory, and a ring all-reduce of ``R x (D + 1) x 4`` bytes.

Example:
    >>> [s.rank for s in DATA_PARALLEL.shards("t", 10, 8, [0, 1, 2], [(0, 10)], world_size=3)]
    [0, 1, 2]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recframe.distributed.sharding.base import Combine, PlacementQuery, ShardingRule
from recframe.distributed.types import ShardSpec
from recframe.vocab import ShardingType

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


class DataParallel(ShardingRule):
    """One full replica per rank of the world.

    Example:
        >>> DATA_PARALLEL.group_problems("table 't' (data_parallel)", [0], world_size=2, local_world_size=None)
        ["table 't' (data_parallel): ranks must be all 2 ranks, got [0]"]
    """

    kind = ShardingType.data_parallel
    axis = None
    combine = Combine.replica

    def shards(self, table: str, rows: int, cols: int, ranks: list[int], bounds: list[tuple[int, int]],
               world_size: int) -> list[ShardSpec]:
        return [ShardSpec(table, self.kind, r, 0, rows, 0, cols) for r in range(world_size)]

    def group_problems(self, where: str, ranks: list[int], world_size: int,
                       local_world_size: int | None) -> list[str]:
        if sorted(ranks) != list(range(world_size)):
            return [f"{where}: ranks must be all {world_size} ranks, got {ranks}"]
        return []

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """Every rank (never a pinned table); auto: only tables of at most ``data_parallel_max_rows`` rows,
        with several ranks."""
        if query.explicit and len(query.pool) < query.world_size:
            return [], [f"data_parallel needs every rank but the table is pinned to ranks {query.pool}"]
        if len(query.pool) == query.world_size and (
                query.explicit or (query.world_size > 1 and query.rows <= query.data_parallel_max_rows)):
            return [query.pool], []
        return [], []

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        sheet.replicas(ranks)


DATA_PARALLEL = DataParallel()

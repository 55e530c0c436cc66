"""table_row_wise: row_wise over the ranks of one node.

``local_world_size`` consecutive ranks stand for a node. In a world of several nodes the shards'
pooled partial sums are summed inside the node first (a reduce-scatter among the table's ranks),
and each destination gets the sum from one of them, in the output all-to-all
(``recframe.distributed.node_reduce``; ``node_reduce = True``); on one node, or on one rank, they
travel as row_wise's do (one partial sum per shard, added on the destination). The cost model charges
each case as it runs (``add_cost``; ``planner/cost.py``).

Example:
    >>> TABLE_ROW_WISE.group_problems("table 't' (table_row_wise)", [1, 2], world_size=4, local_world_size=2)
    ["table 't' (table_row_wise): ranks [1, 2] span several nodes of 2 ranks; list ranks of one node"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recframe.distributed.sharding.base import Axis, Combine, PlacementQuery, ShardingRule
from recframe.distributed.sharding.row_wise import add_row_shards
from recframe.vocab import ShardingType

CANDIDATE_NODES = 8  # auto tries at most this many nodes (its least-loaded ones) for a table

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


class TableRowWise(ShardingRule):
    """Row blocks on the ranks of one node; partial sums added; exact for every optimizer.

    Example:
        >>> TABLE_ROW_WISE.row_split, TABLE_ROW_WISE.num_shards([0, 1])
        (True, 2)
    """

    kind = ShardingType.table_row_wise
    axis = Axis.rows
    combine = Combine.add
    node_reduce = True

    def group_problems(self, where: str, ranks: list[int], world_size: int,
                       local_world_size: int | None) -> list[str]:
        if local_world_size is None or local_world_size < 1:
            return [f"{where} needs local_world_size (ranks per node)"]
        if len({r // local_world_size for r in ranks}) > 1:
            return [f"{where}: ranks {ranks} span several nodes of {local_world_size} ranks; list ranks of one node"]
        return []

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """For each node, the pool's ranks on it (at most one per row); auto: only with several nodes."""
        if not (query.explicit or len(query.nodes) > 1):
            return [], []
        pool = set(query.pool)
        found = [[r for r in node if r in pool][:query.rows] for node in query.nodes]
        found = [ranks for ranks in found if ranks]
        if len(found) <= CANDIDATE_NODES:
            return found, []
        rank_order = {r: i for i, r in enumerate(query.by_load)}  # the nodes whose most loaded rank is least loaded
        keep = sorted(range(len(found)), key=lambda i: (max(rank_order[r] for r in found[i]), i))[:CANDIDATE_NODES]
        return [found[i] for i in sorted(keep)], []

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        """row_wise's terms; with several ranks in a world of several nodes, the node-level reduce's output terms
        (the runtime's condition: ``node_reduce.NodeReduceLayout``)."""
        add_row_shards(sheet, ranks, bounds, node_reduce=len(set(ranks)) > 1 and sheet.topo.num_nodes > 1)


TABLE_ROW_WISE = TableRowWise()

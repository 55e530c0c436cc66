"""table_row_wise: row_wise over the ranks of one node, or of a few nodes.

``local_world_size`` consecutive ranks stand for a node. In a world of several nodes the shards'
pooled partial sums are summed inside each node first (a reduce-scatter among the table's ranks on
that node), and each destination gets one sum per node of the table, from one rank of that node, in
the output all-to-all, and adds them (``recframe.distributed.node_reduce``; ``reduce_groups``); on
one node of the world, or from a node with one of the table's ranks, they travel as row_wise's do (one
partial sum per shard, added on the destination). The cost model charges each case as it runs
(``add_cost``; ``planner/cost.py``).

Example:
    >>> TABLE_ROW_WISE.group_problems("table 't' (table_row_wise)", [1, 2], world_size=4, local_world_size=None)
    ["table 't' (table_row_wise) needs local_world_size (ranks per node)"]
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
    """Row blocks on the ranks of one or a few nodes; partial sums added; exact for every optimizer.

    Example:
        >>> TABLE_ROW_WISE.row_split, TABLE_ROW_WISE.num_shards([0, 1])
        (True, 2)
    """

    kind = ShardingType.table_row_wise
    axis = Axis.rows
    combine = Combine.add

    def group_problems(self, where: str, ranks: list[int], world_size: int,
                       local_world_size: int | None) -> list[str]:
        if local_world_size is None or local_world_size < 1:
            return [f"{where} needs local_world_size (ranks per node)"]
        return []

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """For each node, the pool's ranks on it (at most one per row; more than ``CANDIDATE_NODES`` nodes: the
        ``CANDIDATE_NODES`` whose most loaded rank is least loaded), then for each of ``query.node_spans`` that many
        least-loaded nodes together (where the table has a row for each of their ranks); auto: only with several
        nodes."""
        if not (query.explicit or len(query.nodes) > 1):
            return [], []
        pool = set(query.pool)
        found = [[r for r in node if r in pool][:query.rows] for node in query.nodes]
        found = [ranks for ranks in found if ranks]
        rank_order = {r: i for i, r in enumerate(query.by_load)}
        by_load = sorted(range(len(found)), key=lambda i: (max(rank_order[r] for r in found[i]), i))
        single = found if len(found) <= CANDIDATE_NODES else [found[i] for i in sorted(by_load[:CANDIDATE_NODES])]
        spans = [sorted(r for i in by_load[:span] for r in found[i]) for span in query.node_spans
                 if 1 < span <= len(found)]
        return single + [ranks for ranks in spans if len(ranks) <= query.rows], []

    def reduce_groups(self, ranks: list[int], local_world_size: int) -> list[tuple[int, ...]]:
        """The placement's ranks of each node that holds two or more of them (a node's lone rank sends flat).

        Example:
            >>> TABLE_ROW_WISE.reduce_groups([9, 1, 0, 8, 3, 16], local_world_size=8)
            [(0, 1, 3), (8, 9)]
        """
        by_node: dict[int, list[int]] = {}
        for rank in sorted(set(ranks)):
            by_node.setdefault(rank // local_world_size, []).append(rank)
        return [tuple(group) for group in by_node.values() if len(group) > 1]

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        """row_wise's terms; in a world of several nodes, the node-level reduce's output terms for the ranks of each
        of its nodes (the runtime's condition: ``node_reduce.NodeReduceLayout``)."""
        topo = sheet.topo
        groups = self.reduce_groups(ranks, topo.local_world_size) if topo.num_nodes > 1 else []
        add_row_shards(sheet, ranks, bounds, groups=groups)


TABLE_ROW_WISE = TableRowWise()

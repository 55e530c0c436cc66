"""row_wise_routed: row blocks whose shards return one embedding row per id; the sample's rank pools them.

Rows are split into contiguous blocks over the placement's ranks (all ranks by default), as
row_wise; the input all-to-all sends each id to the shard holding its row, as row_wise. The
shard looks its ids up as bags of one (a sequence lookup: ``shard_pooling`` is ``none``, no
pooling on the shard) and the output all-to-all returns one row per id to the sample's rank,
which applies the per-id weights and pools the rows into the bag's sum or mean
(``recframe.distributed.routed``). Backward returns one gradient row per id to the shard, whose
fused optimizer aggregates the duplicate ids of the step as the unsharded table's does: exact for
every optimizer (each row and its state live whole on one shard).

A rank sends each shard each distinct id of its batch once (``input_dist.InputDist._distinct_routed``) and
expands the returned row to every occurrence before pooling; the occurrences' gradients are summed on the
rank and go back as one row. Per step a rank sends and receives at most ``B x L x D`` values for the table
whatever the world size (``B`` samples per rank, ``L`` ids per sample; fewer where ids repeat), against
``world x B x D`` pooled partial sums per shard for row_wise: the split for tables with many ids per sample on
many ranks.

Example:
    >>> ROW_WISE_ROUTED.shard_pooling("mean"), ROW_WISE_ROUTED.row_split, ROW_WISE_ROUTED.combine.value
    ('none', True, 'pool')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recframe.distributed.sharding.base import Axis, Combine, PlacementQuery, ShardingRule
from recframe.vocab import Pooling, ShardingType

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


class RowWiseRouted(ShardingRule):
    """Row blocks on ``ranks`` (``shard_sizes`` rows each, or an even split); one row per id, pooled where sampled.

    Example:
        >>> ROW_WISE_ROUTED.bounds([0, 1, 2], None, rows=10, cols=8)
        [(0, 4), (4, 7), (7, 10)]
    """

    kind = ShardingType.row_wise_routed
    axis = Axis.rows
    combine = Combine.pool

    def shard_pooling(self, pooling: Pooling) -> Pooling:
        """``none``: shards look up one row per id; the sample's rank pools (sum or mean) and weights them.

        Args:
            pooling: the table's pooling.
        """
        return Pooling.none

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """All ranks of the pool (auto: at least two); a table with fewer rows than ranks: its least-loaded ranks."""
        if not (query.explicit or len(query.pool) > 1):
            return [], []
        return [query.pool if query.rows >= len(query.pool) else sorted(query.by_load[:query.rows])], []

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        sheet.row_shards(ranks, bounds, routed=True)


ROW_WISE_ROUTED = RowWiseRouted()

"""What every sharding rule answers, and the parts the rules share.

A rule (one per ``ShardingType``, one file each) says, for a table placed on some ranks:

- its shards: ``bounds`` along the split axis, ``shards`` (``ShardSpec`` blocks with their ranks);
- its slot kind: ``row_split`` (each id goes to the one shard holding its row) or not (every
  shard gets every id of the feature: column_wise, table_wise); replicated (data_parallel) tables
  have no slot: each rank looks up its own samples in its replica (``replicas.py``);
- how outputs combine: ``combine`` (``Combine``), and the pooling its shards use (``shard_pooling``);
- whether training stays exact for an optimizer: ``is_exact``;
- its problems: ``problems`` (the plan alone) and ``group_problems`` (the process group);
- the planner's candidate rank lists (``candidates``) and its cost terms (``add_cost``, on a
  ``recframe.distributed.planner.cost.CostSheet``).

The all-to-all engine (``input_dist.py``, ``layout.py``, ``output_dist.py``) and the planner ask
these questions; none of them compares sharding types.

Example:
    >>> from recframe.distributed.sharding import rule_for
    >>> rule = rule_for("row_wise")
    >>> rule.bounds([0, 1], None, rows=5, cols=8), rule.combine, rule.row_split
    ([(0, 3), (3, 5)], <Combine.add: 'add'>, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from recframe.distributed.types import ShardSpec
from recframe.vocab import OptimizerName, Pooling, ShardingType

if TYPE_CHECKING:
    from recframe.distributed.planner.cost import CostSheet


class Axis(Enum):
    """The dimension a rule splits a table along."""

    rows = "rows"
    columns = "columns"


class Combine(Enum):
    """How the shards' pooled outputs of one feature become the sample's output."""

    concat = "concat"  # each shard's block is some of the feature's columns (table_wise: all of them)
    add = "add"  # each shard pools its rows into partial sums, added on the sample's rank (a reduce-scatter)
    replica = "replica"  # each rank pools its own samples from its full replica (data_parallel)
    pool = "pool"  # each shard returns one row per id; the sample's rank pools them (row_wise_routed)


def even_split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes that differ by at most one, larger first.

    Args:
        total: the number of rows or columns.
        parts: the number of shards.

    Example:
        >>> even_split(5, 2)
        [3, 2]
    """
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class PlacementQuery:
    """What the planner asks a rule for candidate placements of one table.

    Args:
        rows: the table's rows.
        dim: the table's columns.
        optimizer: the table's sparse optimizer.
        pool: the ranks its shards may go to, in order.
        by_load: ``pool`` from the least to the most loaded rank (so far).
        world_size: ranks in all.
        nodes: the ranks of each node, in order.
        explicit: the type was asked for (a constraint or a fixed ``sharding.type``), not chosen by auto.
        fixed: one type for every table (``sharding.type=<type>``).
        data_parallel_max_rows: auto replicates only tables of at most this many rows.
        min_column_shard_dim: auto column shards have at least this many columns.
        free_bytes: table memory still free on each rank of the world (None: unknown, every rank has room).
        table_bytes: the whole table with its optimizer state.
        node_spans: numbers of nodes (two or more) that a node-reducing split (table_row_wise) may also span, on
            the least-loaded nodes (the planner's spread search); empty: one node.

    Example:
        >>> from recframe.distributed.sharding import rule_for
        >>> query = PlacementQuery(rows=3, dim=8, optimizer="sgd", pool=[0, 1, 2, 3], by_load=[3, 1, 0, 2],
        ...                        world_size=4, nodes=[[0, 1, 2, 3]], explicit=False, fixed=False,
        ...                        data_parallel_max_rows=10, min_column_shard_dim=4)
        >>> rule_for("row_wise").candidates(query)  # 3 rows: the 3 least-loaded ranks, one row each
        ([[0, 1, 3]], [])
    """

    rows: int
    dim: int
    optimizer: OptimizerName
    pool: list[int]
    by_load: list[int]
    world_size: int
    nodes: list[list[int]]
    explicit: bool
    fixed: bool
    data_parallel_max_rows: int
    min_column_shard_dim: int
    free_bytes: list[int] | None = None
    table_bytes: int = 0
    node_spans: tuple[int, ...] = ()

    def least_loaded_with_room(self, count: int) -> list[int]:
        """Up to ``count`` ranks of the pool with room for the whole table, the least loaded first (none has room:
        the least loaded, so that the planner can say why nothing fits).

        Args:
            count: how many.
        """
        free = self.free_bytes
        room = self.by_load if free is None else [r for r in self.by_load if free[r] >= self.table_bytes]
        return (room or self.by_load)[:count]


class ShardingRule:
    """The rule of one sharding type (see the module docstring); subclasses set the class attributes.

    Example:
        >>> from recframe.distributed.sharding import rule_for
        >>> [s.sizes for s in rule_for("column_wise").shards("t", 10, 8, [0, 1], [(0, 4), (4, 8)], 2)]
        [(10, 4), (10, 4)]
    """

    kind: ClassVar[ShardingType]
    axis: ClassVar[Axis | None]  # the split axis; None: each shard holds the whole table
    combine: ClassVar[Combine]
    exact_for: ClassVar[frozenset[OptimizerName]] = frozenset(OptimizerName)  # optimizers it trains exactly

    @property
    def row_split(self) -> bool:
        """The slot kind: True when each id goes only to the shard holding its row."""
        return self.axis == Axis.rows

    @property
    def replicated(self) -> bool:
        """Every rank holds the whole table (its checkpoint tensors are saved once)."""
        return self.combine == Combine.replica

    def is_exact(self, optimizer: OptimizerName) -> bool:
        """Whether sharded training with ``optimizer`` equals unsharded training (up to rounding).

        Args:
            optimizer: the table's sparse optimizer.
        """
        return optimizer in self.exact_for

    def num_shards(self, ranks: list[int]) -> int:
        """How many blocks the table is cut into.

        Args:
            ranks: the placement's ranks.
        """
        return 1 if self.axis is None else len(ranks)

    def bounds(self, ranks: list[int], shard_sizes: list[int] | None, rows: int, cols: int) -> list[tuple[int, int]]:
        """``[start, end)`` of each shard along the split axis (no split: ``[(0, rows)]``).

        Args:
            ranks: the placement's ranks, in shard order.
            shard_sizes: rows or columns per shard; None: an even split (``even_split``).
            rows: the table's rows.
            cols: the table's columns.
        """
        if self.axis is None:
            return [(0, rows)]
        total = cols if self.axis == Axis.columns else rows
        sizes = shard_sizes if shard_sizes is not None else even_split(total, len(ranks))
        out, start = [], 0
        for size in sizes:
            out.append((start, start + size))
            start += size
        return out

    def shards(self, table: str, rows: int, cols: int, ranks: list[int], bounds: list[tuple[int, int]],
               world_size: int) -> list[ShardSpec]:
        """Every shard of the table, in shard order.

        Args:
            table: the table's name.
            rows: the table's rows.
            cols: the table's columns.
            ranks: the placement's ranks, in shard order.
            bounds: ``bounds(...)`` of the placement.
            world_size: ranks in all.
        """
        if self.axis is None:
            return [ShardSpec(table, self.kind, ranks[0], 0, rows, 0, cols)]
        if self.axis == Axis.columns:
            return [ShardSpec(table, self.kind, r, 0, rows, lo, hi) for r, (lo, hi) in zip(ranks, bounds, strict=True)]
        return [ShardSpec(table, self.kind, r, lo, hi, 0, cols) for r, (lo, hi) in zip(ranks, bounds, strict=True)]

    def shard_pooling(self, pooling: Pooling) -> Pooling:
        """The pooling of the shards' lookups: partial sums (``Combine.add``) of a mean table pool ``sum``.

        The division by each bag's full size then happens once, after the partial sums are added
        (``recframe.distributed.output_dist.OutputCombine``).

        Args:
            pooling: the table's pooling.
        """
        return Pooling.sum if self.combine == Combine.add and pooling == Pooling.mean else pooling

    def problems(self, where: str, ranks: list[int]) -> list[str]:
        """This type's own constraints on a placement's ranks (the shared checks are ``TablePlacement.problems``).

        Args:
            where: the sentence's subject (``table 't' (row_wise)``).
            ranks: the placement's ranks.
        """
        return []

    def group_problems(self, where: str, ranks: list[int], world_size: int,
                       local_world_size: int | None) -> list[str]:
        """This type's constraints that need the process group (all ranks, nodes).

        Args:
            where: the sentence's subject.
            ranks: the placement's ranks.
            world_size: the group's size.
            local_world_size: ranks per node, when known.
        """
        return []

    def reduce_groups(self, ranks: list[int], local_world_size: int) -> list[tuple[int, ...]]:
        """The sets of the placement's ranks (one node each, sorted) that sum their pooled partial sums among
        themselves before one of them sends each destination the sum (``node_reduce.py``, in a world of several
        nodes); a rank in none sends its own. None by default.

        Args:
            ranks: the placement's ranks.
            local_world_size: ranks per node.
        """
        return []

    def candidates(self, query: PlacementQuery) -> tuple[list[list[int]], list[str]]:
        """The planner's candidate rank lists for one table, and why there are none when that is so.

        Args:
            query: the table and the ranks it may use.
        """
        raise NotImplementedError

    def add_cost(self, sheet: CostSheet, ranks: list[int], bounds: list[tuple[int, int]]) -> None:
        """Add this placement's memory, lookup and communication terms to ``sheet`` (formulas: ``planner/cost.py``).

        Args:
            sheet: the table's cost sheet (workload, topology, batch size).
            ranks: the placement's ranks, in shard order.
            bounds: ``bounds(...)`` of the placement.
        """
        raise NotImplementedError

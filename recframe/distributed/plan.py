"""ShardingPlan: where each embedding table lives across ranks, and how it is split.

A placement names a sharding type (``recframe.vocab.ShardingType``) and the ranks of its shards;
what the type means (its shards, how outputs combine, its cost, which optimizers stay exact) is
its rule in ``recframe.distributed.sharding``. ``shard_sizes`` gives the rows (row splits) or
columns (column_wise) of each shard; None means an even split, the first shards taking one more
where it does not divide.

Example:
    >>> plan = ShardingPlan(world_size=2, tables={"t0": TablePlacement("row_wise", [0, 1])})
    >>> plan.tables["t0"].shard_bounds(num_rows=5, num_cols=8)
    [(0, 3), (3, 5)]
    >>> ShardingPlan.from_dict(plan.to_dict()) == plan
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recframe.distributed.sharding import RULES, rule_for
from recframe.distributed.sharding.base import Axis, ShardingRule
from recframe.distributed.types import ShardSpec
from recframe.vocab import Backend, ShardingType


@dataclass
class TablePlacement:
    """How one table is sharded.

    Args:
        sharding_type: the sharding type (a member or its string).
        ranks: the ranks holding the table's shards, in shard order (data_parallel: the replicas).
        shard_sizes: rows (row-split) or columns (column_wise) per shard; None = even split.
        compute_kernel: the kernel backend of the local shards: ``auto``, ``fbgemm``, ``triton`` or ``torch``.

    Example:
        >>> TablePlacement("column_wise", [0, 1], [3, 5]).shards("t", 10, 8, world_size=2)[1].offsets
        (0, 3)
    """

    sharding_type: ShardingType
    ranks: list[int]
    shard_sizes: list[int] | None = None
    compute_kernel: Backend = Backend.auto

    @property
    def rule(self) -> ShardingRule:
        """The sharding type's rule (``recframe.distributed.sharding``)."""
        return rule_for(self.sharding_type)

    def num_shards(self) -> int:
        """How many blocks the table is cut into."""
        return self.rule.num_shards(self.ranks)

    def shard_bounds(self, num_rows: int, num_cols: int) -> list[tuple[int, int]]:
        """``[start, end)`` of each shard along the split dimension (rows or columns).

        Args:
            num_rows: the table's rows.
            num_cols: the table's columns.
        """
        return self.rule.bounds(self.ranks, self.shard_sizes, num_rows, num_cols)

    def shards(self, table: str, num_rows: int, num_cols: int, world_size: int) -> list[ShardSpec]:
        """Every shard of the table, in shard order.

        Args:
            table: the table's name.
            num_rows: its rows.
            num_cols: its columns.
            world_size: ranks in all (data_parallel has one replica on each).
        """
        return self.rule.shards(table, num_rows, num_cols, self.ranks, self.shard_bounds(num_rows, num_cols),
                                world_size)

    def problems(self, table: str, num_rows: int, num_cols: int, world_size: int) -> list[str]:
        """Every inconsistency of this placement for a ``num_rows x num_cols`` table.

        Args:
            table: the table's name (the sentences name it).
            num_rows: its rows.
            num_cols: its columns.
            world_size: ranks in the plan's world.
        """
        where = f"table {table!r} ({self.sharding_type})"
        if ShardingType.problem("sharding type", self.sharding_type) is not None:
            return [f"{where}: unknown sharding type; choose one of {ShardingType.choices()}"]
        rule = self.rule
        out: list[str] = []
        if not self.ranks:
            out.append(f"{where}: no ranks")
        bad = [r for r in self.ranks if not 0 <= r < world_size]
        if bad:
            out.append(f"{where}: ranks {bad} outside the world of {world_size}")
        if len(set(self.ranks)) != len(self.ranks):
            out.append(f"{where}: a rank is listed twice in {self.ranks}")
        out += rule.problems(where, self.ranks)
        if self.shard_sizes is not None:
            total = num_cols if rule.axis == Axis.columns else num_rows
            if rule.axis is None:
                split = [str(kind) for kind, r in RULES.items() if r.axis is not None]
                out.append(f"{where}: shard_sizes only apply to {', '.join(split[:-1])} and {split[-1]}")
            elif len(self.shard_sizes) != len(self.ranks) or sum(self.shard_sizes) != total:
                out.append(f"{where}: shard_sizes {self.shard_sizes} must give one size per rank and sum to {total}")
            elif min(self.shard_sizes) < 1:
                out.append(f"{where}: every shard needs at least one row/column, got {self.shard_sizes}")
        problem = Backend.problem("compute_kernel", self.compute_kernel)
        if problem is not None:
            out.append(f"{where}: {problem}")
        return out


@dataclass
class ShardingPlan:
    """The placement of every table of a model on ``world_size`` ranks.

    Args:
        world_size: number of ranks.
        tables: table name -> placement.
    """

    world_size: int
    tables: dict[str, TablePlacement] = field(default_factory=dict)

    def problems(self, table_shapes: dict[str, tuple[int, int]]) -> list[str]:
        """Every problem of the plan for tables ``{name: (rows, cols)}``: each table placed once, validly."""
        out = [f"table {name!r} has no placement in the sharding plan" for name in table_shapes
               if name not in self.tables]
        out += [f"the sharding plan places {name!r}, which is not a table of the model" for name in self.tables
                if name not in table_shapes]
        for name, placement in self.tables.items():
            if name in table_shapes:
                out += placement.problems(name, *table_shapes[name], self.world_size)
        return out

    def group_problems(self, table_shapes: dict[str, tuple[int, int]], world_size: int,
                       local_world_size: int | None) -> list[str]:
        """Every reason the plan cannot shard these tables on a process group (the plan may place more tables).

        Args:
            table_shapes: ``{name: (rows, cols)}`` of the tables to shard.
            world_size: the group's size.
            local_world_size: ranks per node (table_row_wise), when known.

        Example:
            >>> ShardingPlan(2, {"t": TablePlacement("data_parallel", [0])}).group_problems({"t": (5, 4)}, 2, None)
            ["table 't' (data_parallel): ranks must be all 2 ranks, got [0]"]
        """
        out = []
        if self.world_size != world_size:
            out.append(f"the sharding plan is for {self.world_size} ranks but the process group has {world_size}")
        sub = ShardingPlan(self.world_size, {n: p for n, p in self.tables.items() if n in table_shapes})
        out += sub.problems(table_shapes)
        for name, placement in sub.tables.items():
            if ShardingType.problem("sharding type", placement.sharding_type) is None:
                out += placement.rule.group_problems(f"table {name!r} ({placement.sharding_type})", placement.ranks,
                                                     world_size, local_world_size)
        return out

    def to_dict(self) -> dict:
        """The plan as plain JSON-ready data (strings, ints, lists); ``from_dict`` reads it back."""
        return {"world_size": self.world_size, "tables": {
            n: {"sharding_type": str(p.sharding_type), "ranks": list(p.ranks),
                "shard_sizes": None if p.shard_sizes is None else list(p.shard_sizes),
                "compute_kernel": str(p.compute_kernel)} for n, p in self.tables.items()}}

    @staticmethod
    def from_dict(data: dict) -> ShardingPlan:
        """A plan from ``to_dict``'s data (``sharding_plan.json``'s ``plan``)."""
        return ShardingPlan(world_size=int(data["world_size"]),
                            tables={n: TablePlacement(**p) for n, p in data["tables"].items()})

"""ShardingPlan: where each embedding table lives across ranks, and how it is split.

Sharding types (for a table of ``R`` rows and ``D`` columns over the ranks listed in its placement):

- ``data_parallel``: every listed rank (normally all) holds the whole table; gradients are all-reduced.
- ``table_wise``: one rank holds the whole table (``ranks`` has one entry).
- ``row_wise``: shard ``i`` holds a contiguous block of rows on ``ranks[i]``; ids go to the rank
  owning their row; pooled partial sums are reduce-scattered back.
- ``column_wise``: shard ``i`` holds a block of columns on ``ranks[i]``; outputs are concatenated.
- ``table_row_wise``: row-wise over the ranks of one node (``ranks`` all in one node).

``shard_sizes`` gives the rows (row_wise, table_row_wise) or columns (column_wise) of each shard;
None means an even split, the first shards taking one more where it does not divide.

Example:
    >>> plan = ShardingPlan(world_size=2, tables={"t0": TablePlacement("row_wise", [0, 1])})
    >>> plan.tables["t0"].shard_bounds(num_rows=5, num_cols=8)
    [(0, 3), (3, 5)]
    >>> ShardingPlan.from_dict(plan.to_dict()) == plan
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SHARDING_TYPES = ("data_parallel", "table_wise", "row_wise", "column_wise", "table_row_wise")
ROW_SPLIT = ("row_wise", "table_row_wise")


def even_split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes that differ by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class TablePlacement:
    """How one table is sharded.

    Args:
        sharding_type: one of ``SHARDING_TYPES``.
        ranks: the ranks holding the table's shards, in shard order (data_parallel: the replicas).
        shard_sizes: rows (row-split) or columns (column_wise) per shard; None = even split.
        compute_kernel: the kernel backend of the local shards: ``auto``, ``fbgemm``, ``triton`` or ``torch``.
    """

    sharding_type: str
    ranks: list[int]
    shard_sizes: list[int] | None = None
    compute_kernel: str = "auto"

    def num_shards(self) -> int:
        return 1 if self.sharding_type in ("table_wise", "data_parallel") else len(self.ranks)

    def shard_bounds(self, num_rows: int, num_cols: int) -> list[tuple[int, int]]:
        """``[start, end)`` of each shard along the split dimension (rows or columns)."""
        if self.sharding_type in ("table_wise", "data_parallel"):
            return [(0, num_rows)]
        total = num_cols if self.sharding_type == "column_wise" else num_rows
        sizes = self.shard_sizes if self.shard_sizes is not None else even_split(total, len(self.ranks))
        bounds, start = [], 0
        for size in sizes:
            bounds.append((start, start + size))
            start += size
        return bounds

    def problems(self, table: str, num_rows: int, num_cols: int, world_size: int) -> list[str]:
        """Every inconsistency of this placement for a ``num_rows x num_cols`` table."""
        where = f"table {table!r} ({self.sharding_type})"
        out: list[str] = []
        if self.sharding_type not in SHARDING_TYPES:
            return [f"{where}: unknown sharding type; choose one of {list(SHARDING_TYPES)}"]
        if not self.ranks:
            out.append(f"{where}: no ranks")
        bad = [r for r in self.ranks if not 0 <= r < world_size]
        if bad:
            out.append(f"{where}: ranks {bad} outside the world of {world_size}")
        if len(set(self.ranks)) != len(self.ranks):
            out.append(f"{where}: a rank is listed twice in {self.ranks}")
        if self.sharding_type == "table_wise" and len(self.ranks) != 1:
            out.append(f"{where}: table_wise needs exactly one rank, got {self.ranks}")
        if self.shard_sizes is not None:
            total = num_cols if self.sharding_type == "column_wise" else num_rows
            if self.sharding_type not in (*ROW_SPLIT, "column_wise"):
                out.append(f"{where}: shard_sizes only apply to row_wise, table_row_wise and column_wise")
            elif len(self.shard_sizes) != len(self.ranks) or sum(self.shard_sizes) != total:
                out.append(f"{where}: shard_sizes {self.shard_sizes} must give one size per rank and sum to {total}")
            elif min(self.shard_sizes) < 1:
                out.append(f"{where}: every shard needs at least one row/column, got {self.shard_sizes}")
        if self.compute_kernel not in ("auto", "fbgemm", "triton", "torch"):
            out.append(f"{where}: compute_kernel {self.compute_kernel!r} is unknown; "
                       "choose auto, fbgemm, triton or torch")
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

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "tables": {n: asdict(p) for n, p in self.tables.items()}}

    @staticmethod
    def from_dict(data: dict) -> ShardingPlan:
        return ShardingPlan(world_size=int(data["world_size"]),
                            tables={n: TablePlacement(**p) for n, p in data["tables"].items()})

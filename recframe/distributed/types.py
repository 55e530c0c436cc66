"""The vocabulary of sharded modules: where a shard sits in its table, and a rank's local shard.

Example:
    >>> spec = ShardSpec(table="t", sharding_type="row_wise", rank=1, row_start=3, row_end=5, col_start=0, col_end=8)
    >>> spec.offsets, spec.sizes
    ((3, 0), (2, 8))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recframe.vocab import ShardingType


@dataclass(frozen=True)
class ShardSpec:
    """One shard of a table: a ``[row_start, row_end) x [col_start, col_end)`` block on ``rank``.

    Args:
        table: the table's name.
        sharding_type: the table's sharding type (its rule: ``recframe.distributed.sharding``).
        rank: the rank holding the shard, in the process group.
        row_start: first row of the block.
        row_end: end of the rows (exclusive).
        col_start: first column.
        col_end: end of the columns (exclusive).
    """

    table: str
    sharding_type: ShardingType
    rank: int
    row_start: int
    row_end: int
    col_start: int
    col_end: int

    @property
    def offsets(self) -> tuple[int, int]:
        """``(row, column)`` of the block's first element in the whole table."""
        return (self.row_start, self.col_start)

    @property
    def sizes(self) -> tuple[int, int]:
        """``(rows, columns)`` of the block."""
        return (self.row_end - self.row_start, self.col_end - self.col_start)


@dataclass
class LocalShard:
    """A rank's piece of a table, for checkpoints: the live tensor and where it sits.

    Args:
        spec: the block (offsets and sizes in the whole table).
        global_shape: ``(rows, columns)`` of the whole table.
        weight: the live ``[rows, columns]`` storage of the block (a view: clone to snapshot).
        optimizer_state: the block's sparse optimizer states (views), as ``optimizer_state_dict``.
        replicated: True for data_parallel tables: every rank holds an identical full copy.
    """

    spec: ShardSpec
    global_shape: tuple[int, int]
    weight: torch.Tensor
    optimizer_state: dict[str, torch.Tensor]
    replicated: bool

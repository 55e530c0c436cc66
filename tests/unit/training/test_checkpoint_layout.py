"""Where each rank's block of a saved table tensor goes: the layouts that make resharding possible."""

from __future__ import annotations

import pytest

from recframe.distributed.types import ShardSpec
from recframe.training.checkpoint.layout import ModelLayout, TableShards


def shards(kind: str, blocks: list[tuple[int, int, int, int, int]]) -> tuple[ShardSpec, ...]:
    return tuple(ShardSpec("t", kind, rank, r0, r1, c0, c1) for rank, r0, r1, c0, c1 in blocks)


def test_row_wise_blocks_tile_the_table() -> None:
    specs = shards("row_wise", [(1, 0, 3, 0, 4), (0, 3, 7, 0, 4)])  # uneven, rank 1 first
    table = TableShards(7, 4, specs, specs[1], replicated=False)
    weight = table.place(2)
    assert weight.global_shape == (7, 4) and weight.shards == ((1, (0, 0), (3, 4)), (0, (3, 0), (4, 4)))
    assert weight.local == 1
    per_row = table.place(1)
    assert per_row.shards == ((1, (0,), (3,)), (0, (3,), (4,))) and per_row.local == 1
    assert table.place(0) is None  # a scalar (adam's step) is whole on every rank


def test_column_wise_per_row_state_is_written_by_the_first_column_shard_and_read_by_all() -> None:
    specs = shards("column_wise", [(0, 0, 9, 0, 5), (1, 0, 9, 5, 8)])
    first = TableShards(9, 8, specs, specs[0], replicated=False).place(1)
    second = TableShards(9, 8, specs, specs[1], replicated=False).place(1)
    assert first.shards == second.shards == ((0, (0,), (9,)),)
    assert first.local == 0 and second.local is None  # rank 1 writes none of it and loads all of it
    assert TableShards(9, 8, specs, specs[1], replicated=False).place(2).shards[1] == (1, (0, 5), (9, 3))


def test_data_parallel_tables_are_whole_and_keys_find_their_table() -> None:
    specs = shards("data_parallel", [(0, 0, 6, 0, 4), (1, 0, 6, 0, 4)])
    replicated = TableShards(6, 4, specs, specs[1], replicated=True)
    elsewhere = TableShards(5, 4, shards("table_wise", [(1, 0, 5, 0, 4)]), None, replicated=False)
    layout = ModelLayout({("sparse", "dp"): replicated, ("sparse", "tw"): elsewhere}, prefix="model.")
    assert layout.place("state_dict/model.sparse.dp.weight", 2) is None
    assert layout.place("sparse_optimizer/sparse/dp/momentum1", 1) is None
    assert not layout.holds("state_dict/model.sparse.tw.weight")
    assert not layout.holds("sparse_optimizer/sparse/tw/momentum1")
    dense = "state_dict/model.dense.0.weight"
    assert layout.holds(dense) and layout.place(dense, 2) is None
    with pytest.raises(KeyError):
        elsewhere.place(2)

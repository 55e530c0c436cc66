"""table_row_wise with the node-level reduce equals unsharded training, and the reduce really runs.

4 gloo ranks as 2 "nodes" of 2 (``local_world_size=2``): the table_row_wise tables' partial sums are
reduce-scattered inside their node and sent across once (``recframe.distributed.node_reduce``). The
cases of tests/distributed/test_sharded.py (5 steps, every optimizer, mean/sum pooling, per-id weights,
empty bags, hashed ids) must match the unsharded collection within 1e-5; 3 ranks (nodes {0, 1} and
{2}) check the padded reduce-scatter of a world that the table's ranks do not divide.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recframe.distributed import ShardedEmbeddingBagCollection
from recframe.distributed.node_reduce import NodeReduceExchange
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer
from tests.distributed.harness import run_workers
from tests.distributed.test_sharded import OPTIMIZERS, TOL, batches, exact, make_tables, plans, run_case

PLANS = ("table_row_wise", "mixed")


def reduce_counts(rank: int, world: int, name: str) -> dict:
    """The exchange's kind and the intra-node collectives of one forward and backward."""
    calls = {"reduce_scatter_tensor": 0, "all_gather_into_tensor": 0}
    originals = {op: getattr(dist, op) for op in calls}

    def counting(op: str):  # noqa: ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[op] += 1
            return originals[op](*args, **kwargs)
        return call

    plan, lws = plans(world)[name]
    torch.manual_seed(0)
    sharded = ShardedEmbeddingBagCollection.from_collection(
        EmbeddingBagCollection(make_tables(), SparseOptimizer(name="sgd")), plan, local_world_size=lws)
    exchange = sharded.output_dist.exchange
    for op in calls:
        setattr(dist, op, counting(op))
    try:
        sharded(batches(world, 0, False)[1][rank]).values().sum().backward()
    finally:
        for op, original in originals.items():
            setattr(dist, op, original)
    return {"node_reduce": isinstance(exchange, NodeReduceExchange), "calls": calls,
            "sent": sum(exchange.send_widths)}


def worker(rank: int, world: int) -> dict:
    cases = {(name, opt): run_case(rank, world, plans(world)[name][0], plans(world)[name][1], opt,
                                   weighted=opt != "sgd")
             for name in PLANS for opt in OPTIMIZERS}
    return {"cases": cases, "counts": {name: reduce_counts(rank, world, name) for name in PLANS}}


@pytest.mark.distributed
@pytest.mark.parametrize("world", [4, pytest.param(3, marks=pytest.mark.slow)])
def test_table_row_wise_node_reduce_equals_unsharded(tmp_path, world: int) -> None:
    results = run_workers(tmp_path, world, worker)
    for key in results[0]["cases"]:
        name, opt = key
        for rank, result in enumerate(results):
            case, where = result["cases"][key], f"plan {name!r}, {opt}, world {world}, rank {rank}"
            assert case["moved"] > 1e-3, f"{where}: training did not change every table"
            if exact(name, opt):
                assert max(case["forward_errors"]) < TOL, f"{where}: forward {case['forward_errors']}"
                for table, shard in case["shards"].items():
                    assert shard["weight_error"] < TOL and shard["state_error"] < TOL, f"{where}: {table} {shard}"
            else:
                assert case["forward_errors"][0] < TOL, f"{where}: first forward differs"
    # plans(world): table_row_wise places t0, t2, t4 on node {0, 1} (and t1, t3 on {2, 3}, or on rank 2 alone)
    for rank, result in enumerate(results):
        counts = result["counts"]["table_row_wise"]
        assert counts["node_reduce"], f"rank {rank}: the flat exchange ran"
        in_reduce = rank < 2 or world == 4
        assert counts["calls"] == {"reduce_scatter_tensor": int(in_reduce), "all_gather_into_tensor": int(in_reduce)}
    # every destination receives each of its 36 output columns once (flat: once per shard, 72)
    if world == 4:
        assert sum(r["counts"]["table_row_wise"]["sent"] for r in results) == world * 36

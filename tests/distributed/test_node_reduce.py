"""table_row_wise with the node-level reduce equals unsharded training, and the reduce really runs.

4 gloo ranks as 2 "nodes" of 2 (``local_world_size=2``): the table_row_wise tables' partial sums are
reduce-scattered inside their node and sent across once (``recframe.distributed.node_reduce``). The
cases of tests/distributed/test_sharded.py (5 steps, every optimizer, mean/sum pooling, per-id weights,
empty bags, hashed ids) must match the unsharded collection within 1e-5; 3 ranks (nodes {0, 1} and
{2}) check the padded reduce-scatter of a world that the table's ranks do not divide. The ``spanning`` plan
puts table_row_wise tables on both nodes (each node reduces its own shards' partial sums and each
destination adds the two sums), beside one-node ones and a table with a lone rank on a node (sent flat).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recframe.distributed import ShardedEmbeddingBagCollection
from recframe.distributed.node_reduce import NodeReduceExchange
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer
from tests.distributed.harness import run_workers
from tests.distributed.test_sharded import OPTIMIZERS, TOL, batches, exact, make_tables, plans, run_case

PLANS = ("table_row_wise", "mixed", "spanning")


def node_plans(world: int) -> dict[str, tuple[ShardingPlan, int]]:
    """``PLANS`` at ``world`` (3 or 4 ranks, 2 a node): test_sharded's two, and ``spanning``: t0 on every rank
    (both nodes), t1 on ranks 3, 0, 2 (block 0 on rank 3; rank 0 alone on its node: flat), t2 on node 0, t3
    table_wise, t4 on ranks 1 and 2 (a lone rank on each node: flat); at 3 ranks the same on nodes {0, 1}, {2}."""
    out = {name: plans(world)[name] for name in PLANS[:2]}
    last = world - 1
    out["spanning"] = (ShardingPlan(world, {
        "t0": TablePlacement("table_row_wise", list(range(world))),
        "t1": TablePlacement("table_row_wise", [last, 0, 2] if world == 4 else [2, 0, 1], [5, 4, 4]),
        "t2": TablePlacement("table_row_wise", [0, 1]),
        "t3": TablePlacement("table_wise", [1 if world == 4 else 2]),
        "t4": TablePlacement("table_row_wise", [1, 2]),
    }), 2)
    return out


def reduce_counts(rank: int, world: int, name: str) -> dict:
    """The exchange's kind and the intra-node collectives of one forward and backward."""
    calls = {"reduce_scatter_tensor": 0, "all_gather_into_tensor": 0}
    originals = {op: getattr(dist, op) for op in calls}

    def counting(op: str):  # noqa: ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[op] += 1
            return originals[op](*args, **kwargs)
        return call

    plan, lws = node_plans(world)[name]
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
    cases = {(name, opt): run_case(rank, world, *node_plans(world)[name], opt, weighted=opt != "sgd")
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
            if name == "spanning" or exact(name, opt):  # spanning: row splits only, exact for every optimizer
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
    # spanning: each node's ranks of t0, t1, t2 reduce in one collective (groups (0, 1) and (2, 3); at 3 ranks
    # (0, 1) only); a destination receives t0's 16 columns twice (one sum a node), t1's 4 twice (node 1's sum and
    # rank 0's own), t2's 8 once, t3's 4, t4's 4 twice (flat from ranks 1 and 2): 60 (flat: 16 x 4 + 4 x 3 + 8 x 2
    # + 4 + 4 x 2 = 104)
    for rank, result in enumerate(results):
        counts = result["counts"]["spanning"]
        in_reduce = int(rank < 2 or world == 4)
        assert counts["node_reduce"] and counts["calls"] == {"reduce_scatter_tensor": in_reduce,
                                                             "all_gather_into_tensor": in_reduce}, (rank, counts)
    if world == 4:
        assert sum(r["counts"]["spanning"]["sent"] for r in results) == world * 60

"""row_wise_routed on 2 gloo ranks equals unsharded training, for every optimizer and the torch and fbgemm backends.

Each case trains, for 5 steps, the unsharded collection on the global batch and the sharded one on each rank's
batch (test_sharded's tables, batches and loss: shared tables, mean and sum pooling, per-id weights, empty bags,
hashed ids, many duplicate ids) and compares the outputs, the weights and the optimizer states (1e-5). Plans: every
table routed over both ranks; uneven shards (one in blocks of equal id mass, as ``sharding.row_blocks=id_mass``
plans them) with rank 0 holding none beside pooled types. Also counted: the
all-to-alls of one step (the rows' own all-to-all forward and backward).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recframe.distributed import ShardedEmbeddingBagCollection, ShardingPlan, TablePlacement
from recframe.distributed.planner.id_law import IdLaw
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer
from tests.distributed.harness import run_workers
from tests.distributed.test_sharded import BATCH, STEPS, TOL, batches, block, loss_of, make_tables

CASES = [("torch", opt) for opt in ("sgd", "adagrad", "rowwise_adagrad", "adam", "rowwise_adam", "lamb")] + [
    ("fbgemm", opt) for opt in ("sgd", "adagrad", "rowwise_adagrad")]  # fbgemm-gpu-cpu: these three


def routed_plans(world: int, backend: str) -> dict[str, ShardingPlan]:
    names = [t.name for t in make_tables()]
    every = ShardingPlan(world, {n: TablePlacement("row_wise_routed", list(range(world)), compute_kernel=backend)
                                 for n in names})
    mixed = ShardingPlan(world, {
        "t0": TablePlacement("row_wise_routed", [1, 0], [15, 5], backend),  # uneven, in reversed rank order
        "t1": TablePlacement("row_wise_routed", [1], None, backend),  # one shard: rank 0 holds no routed t1 rows
        "t2": TablePlacement("table_wise", [0], None, backend),
        "t3": TablePlacement("row_wise", [0, 1], None, backend),
        # blocks of equal id mass under Zipf 1.05 (sharding.row_blocks=id_mass): [2, 7], the hot rows alone on rank 0
        "t4": TablePlacement("row_wise_routed", [0, 1], IdLaw(1.05).balanced_sizes(9, 2), backend),
    })
    return {"every": every, "mixed": mixed}


def run_case(rank: int, world: int, plan: ShardingPlan, backend: str, opt: str) -> dict:
    torch.manual_seed(0)
    reference = EmbeddingBagCollection(make_tables(), SparseOptimizer(name=opt, lr=0.05), backend=backend)
    sharded = ShardedEmbeddingBagCollection.from_collection(reference, plan)
    assert {b for ebc in sharded.local_collections() for b in ebc.backends.values()} <= {backend}
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    errors = []
    for step in range(STEPS):
        whole, local = batches(world, step, weighted=step % 2 == 1)
        expected, got = reference(whole), sharded(local[rank])
        errors.append(float((got.values() - expected.values()[mine]).detach().abs().max()))
        loss_of(expected.values(), step, world, slice(0, world * BATCH)).backward()
        loss_of(got.values(), step, world, mine).backward()
    weights, states = reference.state_dict(), reference.optimizer_state_dict()
    for table, shard in sharded.local_shards().items():
        spec = shard.spec
        errors.append(float((shard.weight - block(weights[f"{table}.weight"], spec.offsets, spec.sizes)).abs().max()))
        for name, value in shard.optimizer_state.items():  # (a 0-dim step count: the same on every shard)
            whole = states[table][name]
            expected = whole if whole.dim() == 0 else block(whole, spec.offsets, spec.sizes)
            errors.append(float((value.float() - expected.float()).abs().max()))
    return {"errors": errors, "moved": float((weights["t0.weight"] - EmbeddingBagCollection(
        make_tables(), SparseOptimizer(name=opt), backend=backend).state_dict()["t0.weight"]).abs().max())}


def count_all_to_alls(rank: int, world: int) -> tuple[int, int, int]:
    """all_to_all_single calls of one weighted forward and its backward, with routed and pooled tables, and the
    entries of the first (the lengths)."""
    calls = []
    original = dist.all_to_all_single

    def counting(output, send, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(send.numel())
        return original(output, send, *args, **kwargs)

    torch.manual_seed(0)
    reference = EmbeddingBagCollection(make_tables(), SparseOptimizer(name="sgd"), backend="torch")
    sharded = ShardedEmbeddingBagCollection.from_collection(reference, routed_plans(world, "torch")["mixed"])
    dist.all_to_all_single = counting
    try:
        values = sharded(batches(world, 0, True)[1][rank]).values()
        forward = len(calls)
        values.sum().backward()
    finally:
        dist.all_to_all_single = original
    return forward, len(calls) - forward, calls[0]


def worker(rank: int, world: int) -> dict:
    results = {(name, backend, opt): run_case(rank, world, plan, backend, opt)
               for backend, opt in CASES for name, plan in routed_plans(world, backend).items()}
    return {"cases": results, "all_to_alls": count_all_to_alls(rank, world)}


@pytest.mark.distributed
def test_row_wise_routed_equals_unsharded(tmp_path) -> None:
    pytest.importorskip("fbgemm_gpu")
    results = run_workers(tmp_path, 2, worker)
    for rank, result in enumerate(results):
        for (name, backend, opt), case in result["cases"].items():
            where = f"plan {name!r}, {backend}, {opt}, rank {rank}"
            assert max(case["errors"]) < TOL, f"{where}: {case['errors']}"
            assert case["moved"] > 1e-3, f"{where}: training did not move t0"
        # forward: lengths, ids, weights, pooled output, routed rows; backward: rows, pooled. The lengths: to
        # rank 0 a flag, the counts of f0, f1, f5 (routed) and 4 lengths of f3 and of f4; to rank 1 a flag, the
        # counts of f0, f1, f2, f5 and 4 lengths of f4 (with B lengths a routed slot it would be 42 entries)
        assert result["all_to_alls"] == (5, 2, (1 + 3 + 2 * BATCH) + (1 + 4 + BATCH))

"""data_parallel tables as the runtime runs them: local lookups, one all-reduce of the replicas' row gradients.

For every fused optimizer (the lazy ones, adam, rowwise_adam and lamb, included: rows that the global batch
does not touch must not move), an all-data_parallel plan and a mixed one (data_parallel + table_wise +
row_wise) train 4 steps on each rank's own batch and must equal the unsharded collection trained on the
global batch (mean loss), also with two forwards before each backward (gradient accumulation: the optimizer's
step count too); every rank's replicas must be bit-identical afterwards. The traffic: the ids of
data_parallel features never enter the input all-to-all (the ids all-to-all carries exactly the other
features' ids), an all-data_parallel plan makes no all-to-all at all, and each backward makes one all-reduce.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recframe.distributed import ShardedEmbeddingBagCollection, ShardingPlan, TablePlacement
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer
from tests.distributed.harness import run_workers
from tests.distributed.test_sharded import BATCH, batches, block, loss_of, make_tables

STEPS = 4
TOL = 1e-5
OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam", "rowwise_adam", "lamb")
REPLICATED = {"t0", "t3"}  # in the mixed plan: t0 (shared by f0, f1; sum) and t3 (mean, hashed ids)


def plans(world: int) -> dict[str, ShardingPlan]:
    every = list(range(world))
    names = [t.name for t in make_tables()]
    return {
        "data_parallel": ShardingPlan(world, {n: TablePlacement("data_parallel", every) for n in names}),
        "mixed": ShardingPlan(world, {
            "t0": TablePlacement("data_parallel", every), "t1": TablePlacement("table_wise", [world - 1]),
            "t2": TablePlacement("row_wise", every), "t3": TablePlacement("data_parallel", every),
            "t4": TablePlacement("row_wise", list(reversed(every)))}),
    }


def train(rank: int, world: int, plan: ShardingPlan, opt: str, accumulate: bool = False) -> dict:
    """``STEPS`` steps on each side; ``accumulate``: two forwards (two batches) before each backward of their sum."""
    torch.manual_seed(0)
    optimizer = SparseOptimizer(name=opt, lr=0.05, weight_decay=0.01 if opt == "lamb" else 0.0)
    reference = EmbeddingBagCollection(make_tables(), optimizer, backend="torch")
    sharded = ShardedEmbeddingBagCollection.from_collection(reference, plan)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    forward = 0.0
    for step in range(STEPS):
        expected_loss, got_loss = 0.0, 0.0
        for micro in range(2 if accumulate else 1):
            whole, local = batches(world, step + 10 * micro, weighted=opt != "sgd")
            expected, got = reference(whole), sharded(local[rank])
            forward = max(forward, float((got.values() - expected.values()[mine]).detach().abs().max()))
            expected_loss = expected_loss + loss_of(expected.values(), step, world, slice(0, world * BATCH))
            got_loss = got_loss + loss_of(got.values(), step, world, mine)
        expected_loss.backward()
        got_loss.backward()
    weights, states = reference.state_dict(), reference.optimizer_state_dict()
    errors, replicas = {}, {}
    for table, shard in sharded.local_shards().items():
        spec = shard.spec
        error = float((shard.weight - block(weights[f"{table}.weight"], spec.offsets, spec.sizes)).abs().max())
        for name, value in shard.optimizer_state.items():
            expected_state = states[table][name]
            error = max(error, float((value.float() - (expected_state if value.dim() == 0 else block(
                expected_state, spec.offsets, spec.sizes)).float()).abs().max()))
        errors[table] = error
        if shard.replicated:
            replicas[table] = {"weight": shard.weight.clone(),
                               **{name: value.clone() for name, value in shard.optimizer_state.items()}}
    return {"forward": forward, "errors": errors, "replicas": replicas}


def traffic(rank: int, world: int) -> dict:
    """What the collectives of one training step carry: ids sent in the input all-to-all, calls of each kind."""
    calls: list[tuple[str, int, torch.dtype]] = []
    originals = dist.all_to_all_single, dist.all_reduce

    def all_to_all(output, input, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202, A002
        calls.append(("all_to_all", input.numel(), input.dtype))
        return originals[0](output, input, *args, **kwargs)

    def all_reduce(tensor, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(("all_reduce", tensor.numel(), tensor.dtype))
        return originals[1](tensor, *args, **kwargs)

    out = {}
    for name, plan in plans(world).items():
        torch.manual_seed(0)
        sharded = ShardedEmbeddingBagCollection.from_collection(
            EmbeddingBagCollection(make_tables(), SparseOptimizer(name="adam"), backend="torch"), plan)
        kjt = batches(world, 1, weighted=False)[1][rank]
        dist.all_to_all_single, dist.all_reduce = all_to_all, all_reduce
        try:
            calls.clear()
            values = sharded(kjt).values()
            forward = list(calls)
            calls.clear()
            values.pow(2).sum().backward()
            backward = list(calls)
        finally:
            dist.all_to_all_single, dist.all_reduce = originals
        replicated = [f for t in make_tables() if plan.tables[t.name].sharding_type == "data_parallel"
                      for f in t.feature_names]
        ids = {f: kjt[f].values().numel() for f in kjt.keys()}
        out[name] = {
            "forward": forward, "backward": backward,
            "mp_ids": sum(n for f, n in ids.items() if f not in replicated and f != "x"),
            "dp_ids": sum(n for f, n in ids.items() if f in replicated),
            "input_features": [] if sharded.input_dist is None else list(sharded.input_dist.features),
            "replicated": replicated,
        }
    return out


def worker(rank: int, world: int) -> dict:
    cases = {(name, opt): train(rank, world, plan, opt) for name, plan in plans(world).items() for opt in OPTIMIZERS}
    for opt in ("rowwise_adagrad", "adam"):  # gradient accumulation: one optimizer step per forward, as unsharded
        cases[("accumulate", opt)] = train(rank, world, plans(world)["mixed"], opt, accumulate=True)
    return {"cases": cases, "traffic": traffic(rank, world)}


@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_data_parallel_equals_unsharded(tmp_path, world: int) -> None:
    results = run_workers(tmp_path, world, worker)
    for key in results[0]["cases"]:
        name, opt = key
        where = f"plan {name!r}, {opt}, world {world}"
        for rank, result in enumerate(results):
            case = result["cases"][key]
            assert case["forward"] < TOL, f"{where}, rank {rank}: forward differs by {case['forward']}"
            for table, error in case["errors"].items():
                assert error < TOL, f"{where}, rank {rank}: table {table} (weights or state) differs by {error}"
        first = results[0]["cases"][key]["replicas"]
        assert set(first) == (REPLICATED if name != "data_parallel" else {t.name for t in make_tables()}), where
        for rank, result in enumerate(results[1:], start=1):  # replicas stay bit-identical
            for table, tensors in result["cases"][key]["replicas"].items():
                for state, value in tensors.items():
                    assert torch.equal(value, first[table][state]), f"{where}: {table}.{state} of rank {rank} differs"


@pytest.mark.distributed
def test_data_parallel_ids_stay_local(tmp_path) -> None:
    world = 2
    for rank, result in enumerate(run_workers(tmp_path, world, traffic_worker)):
        mixed, replicated = result["mixed"], result["data_parallel"]
        assert not set(mixed["input_features"]) & set(mixed["replicated"]), mixed
        kinds = [kind for kind, _, _ in mixed["forward"]]
        assert kinds == ["all_to_all"] * 3, mixed["forward"]  # lengths, ids, pooled output
        _, sent_ids, dtype = mixed["forward"][1]
        assert dtype == torch.int64 and sent_ids == mixed["mp_ids"], (rank, mixed, "ids of replicas were sent")
        assert mixed["dp_ids"] > 0
        assert [kind for kind, _, _ in mixed["backward"]] == ["all_to_all", "all_reduce"], mixed["backward"]
        # every table replicated: nothing travels forward, one all-reduce of rows x (dim + 1) floats backward
        assert replicated["forward"] == [] and replicated["input_features"] == [], replicated
        rows_dims = sum(t.num_embeddings * (t.embedding_dim + 1) for t in make_tables())
        assert replicated["backward"] == [("all_reduce", rows_dims, torch.float32)], replicated["backward"]


def traffic_worker(rank: int, world: int) -> dict:
    return traffic(rank, world)

"""A sharded collection built from an ``output_dtype="auto"`` one, under bf16 autocast (2 gloo ranks).

Its output comes out in bf16 like the unsharded collection's, and it trains like the unsharded
one. Where blocks only move (table_wise, column_wise, data_parallel; a power-of-two gradient
scale) the local lookups and the all-to-alls carry bf16 themselves (``OutputDist.exact_in_16_bit``)
and the outputs equal the unsharded ones bit for bit (table_wise: the tables too); where partial sums are added
(row_wise, the mixed plan) the exchange stays fp32 and the combined output is cast: outputs within
one bf16 rounding (the partial sums add in another order), tables within 1e-5 after 3 steps.
Uses the plans, tables and batches of ``test_sharded.py``.
"""

from __future__ import annotations

import pytest
import torch

from recframe.distributed import ShardedEmbeddingBagCollection
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer
from recframe.vocab import OutputDtype
from tests.distributed.harness import run_workers
from tests.distributed.test_sharded import BATCH, batches, block, loss_of, make_tables, plans

STEPS = 3


def worker(rank: int, world: int) -> dict:
    out = {}
    for name in ("mixed", "row_wise", "table_wise", "column_wise", "data_parallel"):
        plan, lws = plans(world)[name]
        torch.manual_seed(0)
        reference = EmbeddingBagCollection(make_tables(), SparseOptimizer(name="adagrad", lr=0.1), output_dtype="auto")
        sharded = ShardedEmbeddingBagCollection.from_collection(reference, plan, local_world_size=lws)
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        dtypes, forward, exact = set(), [], []
        for step in range(STEPS):
            whole, local = batches(world, step, True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                expected, got = reference(whole).values(), sharded(local[rank]).values()
            dtypes |= {expected.dtype, got.dtype}
            want = expected[mine].detach().float()
            forward.append(float(((got.detach().float() - want).abs() - want.abs() * 2.0**-8).max()))
            exact.append(bool(torch.equal(got, expected[mine])))
            loss_of(expected.float(), step, world, slice(0, world * BATCH)).backward()
            loss_of(got.float(), step, world, mine).backward()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
            plain = sharded(batches(world, 0, True)[1][rank]).values().dtype
        weights = reference.state_dict()
        errors = [float((shard.weight - block(weights[f"{table}.weight"], shard.spec.offsets, shard.spec.sizes))
                        .abs().max()) for table, shard in sharded.local_shards().items()]
        out[name] = {"output_dtype": sharded.output_dtype, "dtypes": dtypes, "plain": plain, "forward": forward,
                     "weights": errors, "exact": exact, "carried": sharded.output_dist.exact_in_16_bit,
                     "local": {ebc.output_dtype for ebc in sharded.local_collections()}}
    return out


@pytest.mark.distributed
def test_sharded_auto_output_under_autocast(tmp_path) -> None:
    for rank, result in enumerate(run_workers(tmp_path, 2, worker)):
        for name, case in result.items():
            where = f"plan {name}, rank {rank}"
            assert case["output_dtype"] == OutputDtype.auto, where
            assert case["dtypes"] == {torch.bfloat16} and case["plain"] == torch.float32, where
            assert max(case["forward"]) <= 1e-6, f"{where}: outputs beyond a bf16 rounding {case['forward']}"
            assert max(case["weights"]) < 1e-5, f"{where}: tables {case['weights']}"
            carried = name not in ("mixed", "row_wise")
            assert case["carried"] == carried and case["local"] == {"auto" if carried else "fp32"}, where
            if carried:  # bf16 through the local lookups and the all-to-alls: the unsharded numbers
                assert all(case["exact"]), f"{where}: {case}"
            if name == "table_wise":  # (replicas' all-reduce and column blocks' sums add in another order: 1 ulp)
                assert max(case["weights"]) == 0.0, f"{where}: {case}"


def _triton_ok() -> bool:
    try:
        from recframe.embedding.kernels import triton_kernels
    except Exception:  # no triton: the triton case skips
        return False
    return triton_kernels.INTERPRETED


@pytest.mark.distributed
@pytest.mark.parametrize("backend", ["torch", pytest.param(
    "triton", marks=pytest.mark.skipif(not _triton_ok(), reason="needs triton's interpreter"))])
def test_one_rank_sharded_dlrm_dcn_under_bf16_equals_fp32_outputs(backend: str) -> None:
    """The one-device training path (world 1, table_wise, as Lightning shards it): ``auto`` carries bf16 from the
    kernels through the all-to-all, and logits, dense gradients and tables equal those of ``fp32`` bit for bit."""
    import torch.distributed as dist

    from recframe.distributed import ShardingPlan, TablePlacement, shard_model
    from recframe.models import DLRM_DCN
    from recframe.sparse import Batch

    tables = [t for t in make_tables() if t.pooling == "sum"]
    plan = ShardingPlan(1, {t.name: TablePlacement("table_wise", [0], compute_kernel=backend) for t in tables})
    features = [f for t in tables for f in t.feature_names]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        models = []
        for output_dtype in ("auto", "fp32"):
            torch.manual_seed(0)
            ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad", lr=0.1), backend=backend,
                                         output_dtype=output_dtype)
            models.append(shard_model(DLRM_DCN(ebc, 3, [8, 4], [8], num_cross_layers=2, low_rank=4), plan))
        assert models[0].embeddings.output_dist.exact_in_16_bit
        assert {ebc.output_dtype for ebc in models[0].embeddings.local_collections()} == {"auto"}
        for step in range(2):
            kjt = batches(1, step, False, features, {f: 7 for f in features})[0]
            g = torch.Generator().manual_seed(step)
            batch = Batch(torch.rand(BATCH, 3, generator=g), kjt, torch.randint(0, 2, (BATCH,), generator=g).float())
            results = []
            for model in models:
                model.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(batch)
                model.loss(logits.float(), batch.labels).total.backward()
                grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
                results.append((logits.detach(), grads, model.embeddings.state_dict()))
            (a_logits, a_grads, a_tables), (b_logits, b_grads, b_tables) = results
            assert torch.equal(a_logits, b_logits), step
            assert len(a_grads) == len(b_grads) > 0
            assert all(torch.equal(x, y) for x, y in zip(a_grads, b_grads, strict=True)), step
            assert all(torch.equal(a_tables[k], b_tables[k]) for k in b_tables), step
    finally:
        dist.destroy_process_group()

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

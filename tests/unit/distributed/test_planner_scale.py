"""The planner at scale: the speed-up keeps the small plans, the vectorized costs equal the shard-by-shard ones,
4,096 ranks plan in seconds (issue 24).

``plans/planner_6b13352.json`` holds the plans of the planner as of commit 6b13352 (before the vectorized cost
model and the candidate limits) on the configs of ``_plans``; they were made by that same function.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from recframe.config.compose import compose_config
from recframe.distributed.plan import TablePlacement
from recframe.distributed.planner.cost import TableWorkload, option_cost
from recframe.distributed.planner.planner import Planner
from recframe.distributed.planner.topology import Topology
from recframe.distributed.sharding import RULES, table_row_wise, table_wise
from recframe.distributed.sharding.base import PlacementQuery
from recframe.training.planning import make_plan, table_workloads
from recframe.vocab import ShardingType
from tests.unit.distributed.test_sharding_rules import _reference_cost

FORMER = json.loads((Path(__file__).parent / "plans" / "planner_6b13352.json").read_text())


def _plans(key: str) -> dict[str, list]:
    """The plan of one config of ``FORMER`` by today's planner (the same recipe that made the file)."""
    name, shape = key.split("/")
    world, local = (int(x) for x in shape.split("x"))
    if not name.startswith("random"):
        over = [f"+experiment={name}", f"world_size={world}", f"sharding.topology.local_world_size={local}"]
        if name == "dlrm":
            over.append("sharding.topology.memory_per_rank_gb=1")
        plan, _ = make_plan(compose_config(over), world_size=world, local_world_size=local)
        return {n: [str(p.sharding_type), list(p.ranks)] for n, p in plan.tables.items()}
    rng = random.Random(7)
    for case in range(int(name.removeprefix("random")) + 1):
        world, local = rng.choice([(4, 2), (8, 4), (12, 4), (16, 8), (24, 8), (32, 8)])
        tables = [TableWorkload(f"t{i}", rows=rng.choice([10, 500, 20000, 10**6, 3 * 10**6]),
                                dim=rng.choice([16, 64, 128]), num_features=rng.randint(1, 2),
                                ids_per_sample=rng.choice([1.0, 3.0, 20.0]),
                                optimizer=rng.choice(["sgd", "adagrad", "rowwise_adagrad"]))
                  for i in range(rng.randint(5, 20))]
        batch = rng.choice([256, 4096])
        if case == int(name.removeprefix("random")):
            result = Planner(Topology(world, local, 2 * 10**9), batch_size=batch).plan(tables)
            return {n: [str(p.sharding_type), list(p.ranks)] for n, p in result.plan.tables.items()}
    raise AssertionError(key)


@pytest.mark.parametrize("key", sorted(FORMER))
def test_plans_equal_the_former_planner(key: str) -> None:
    assert _plans(key) == FORMER[key]


@pytest.mark.parametrize("kind", ["row_wise", "table_row_wise", "table_wise", "data_parallel"])
def test_vectorized_costs_equal_shard_by_shard_at_a_large_world(kind: str) -> None:
    topo = Topology(200, 8, 10**9)  # 25 nodes; row_wise over 130 ranks takes the batched path (> 64 shards)
    t = TableWorkload("t", rows=100_003, dim=64, num_features=2, ids_per_sample=7.0)
    ranks = {"row_wise": random.Random(0).sample(range(200), 130), "table_row_wise": topo.node_ranks(3),
             "table_wise": [77], "data_parallel": list(range(200))}[kind]
    placement = TablePlacement(kind, ranks)
    cost = option_cost(t, placement, topo, batch_size=512)
    memory, lookup, comm = _reference_cost(t, placement, topo, 512)
    assert cost.memory == memory and cost.lookup_s == lookup
    assert cost.comm_s == pytest.approx(comm, rel=1e-12)


def test_candidates_are_limited_to_the_least_loaded_ranks_with_room_and_nodes() -> None:
    world = 160  # 20 nodes of 8
    by_load = list(range(world))[::-1]  # rank 159 least loaded
    free = [0 if r % 2 else 10**9 for r in range(world)]  # odd ranks are full
    query = PlacementQuery(rows=10**6, dim=16, optimizer="sgd", pool=list(range(world)), by_load=by_load,
                           world_size=world, nodes=[list(range(n * 8, n * 8 + 8)) for n in range(20)], explicit=False,
                           fixed=False, data_parallel_max_rows=0, min_column_shard_dim=4, free_bytes=free,
                           table_bytes=10**8)
    found, _ = RULES[ShardingType.table_wise].candidates(query)
    assert found == [[r] for r in range(world - 2 * table_wise.CANDIDATES, world, 2)]  # the 64 least loaded with room
    found, _ = RULES[ShardingType.table_row_wise].candidates(query)
    assert found == [list(range(n * 8, n * 8 + 8)) for n in range(20 - table_row_wise.CANDIDATE_NODES, 20)]
    small = PlacementQuery(**{**query.__dict__, "pool": list(range(64)), "by_load": list(range(64))[::-1]})
    assert RULES[ShardingType.table_wise].candidates(small)[0] == [[r] for r in range(64)]  # a small pool: all


@pytest.mark.slow
def test_mlperf_plans_4096_ranks_in_seconds() -> None:
    cfg = compose_config(["+experiment=mlperf_dcnv2", "world_size=4096", "sharding.topology.local_world_size=8"])
    start = time.perf_counter()
    plan, report = make_plan(cfg, world_size=4096, local_world_size=8)
    assert time.perf_counter() - start < 20  # ~3 s on the 2-core VM (the former planner: minutes)
    assert len(plan.tables) == 26 and len(report.ranks) == 4096


def test_the_report_gives_max_over_mean_and_the_critical_rank_s_time() -> None:
    cfg = compose_config(["+experiment=mlperf_dcnv2", "world_size=64", "sharding.topology.local_world_size=8"])
    _, report = make_plan(cfg, world_size=64, local_world_size=8)
    b = report.busiest
    assert report.imbalance == pytest.approx(b.total_ms / (sum(r.total_ms for r in report.ranks) / 64))
    assert b.lookup_ms > 0 and b.intra_ms > 0 and b.inter_ms > 0  # 8 nodes: both links carry traffic
    assert b.lookup_ms + b.intra_ms + b.inter_ms == pytest.approx(b.total_ms)
    text = report.format()
    assert f"max/mean {report.imbalance:.2f}" in text and f"inter-node comm {b.inter_ms:.3f}" in text
    data = report.to_dict()
    assert data["max_over_mean"] == report.imbalance and data["critical_rank"]["rank"] == b.rank
    name, ms = report.critical_tables[0]  # t_cat_20: 100 ids per sample, table_row_wise on the critical node
    assert name == "t_cat_20" and f"its costliest tables: t_cat_20 (table_row_wise) {ms:.3f} ms" in text
    assert [t["table"] for t in data["critical_rank"]["costliest_tables"]] == [n for n, _ in report.critical_tables]


def test_mlperf_max_over_mean_at_64_ranks() -> None:
    """MLPerf DLRM-DCNv2, 64 ranks of 8 per node: 1.18 (issue 24 asks <= 1.10, not reached).

    The critical node holds t_cat_20 alone (100 ids per sample, table_row_wise on its 8 ranks: 8.6 ms of
    lookups on top of the ~13 ms every rank pays to receive its embeddings); the runtime has no placement
    that splits one table's rows over several nodes with a node-level reduce, and row_wise over 16 ranks
    costs more than it saves (each shard exchanges dense partial sums with all 64 ranks). A pass that
    re-places each table given all the others (objective: the slowest rank) finds no better placement.
    """
    cfg = compose_config(["+experiment=mlperf_dcnv2", "world_size=64", "sharding.topology.local_world_size=8"])
    plan, report = make_plan(cfg, world_size=64, local_world_size=8)
    assert report.imbalance <= 1.181
    critical = [n for n, p in plan.tables.items() if report.busiest.rank in p.ranks and len(p.ranks) < 64]
    assert critical == ["t_cat_20"]


def test_half_precision_comms_halve_the_output_terms() -> None:
    cfg = compose_config(["+experiment=mlperf_dcnv2", "world_size=16", "sharding.topology.local_world_size=8",
                          "sharding.comms.forward_dtype=bf16", "sharding.comms.backward_dtype=fp16"])
    assert {t.output_wire_bytes for t in table_workloads(cfg)} == {4}  # 2 + 2 (fp32 both ways: 8)
    topo, placement = Topology(16, 8, 10**11), TablePlacement("table_wise", [3])
    fp32 = TableWorkload("t", rows=1000, dim=128, num_features=1, ids_per_sample=0.0)  # no ids: output terms only
    half = TableWorkload("t", rows=1000, dim=128, num_features=1, ids_per_sample=0.0, output_wire_bytes=4)
    length = option_cost(TableWorkload("t", 1000, 128, 1, 0.0, output_wire_bytes=0), placement, topo, 64).comm_s
    out32 = [a - b for a, b in zip(option_cost(fp32, placement, topo, 64).comm_s, length, strict=True)]
    out16 = [a - b for a, b in zip(option_cost(half, placement, topo, 64).comm_s, length, strict=True)]
    assert out16 == pytest.approx([x / 2 for x in out32]) and min(out32) > 0

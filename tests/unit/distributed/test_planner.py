"""The planner: cost model against hand computations, greedy placement, constraints, failures, manual plans."""

from __future__ import annotations

import json
import random

import pytest
import torch

from recframe.config.compose import compose_config, find_problems
from recframe.config.resolve import table_configs
from recframe.config.sharding import TopologyConfig
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner import (
    Planner,
    PlanningError,
    PlanReport,
    TableConstraint,
    TableWorkload,
    Topology,
    option_cost,
)
from recframe.training.checks import check_config
from recframe.training.planning import make_plan, table_workloads, topology_from_config

GB = 10**9
# 1000 x 16 fp32 with rowwise Adagrad, one feature with 2 ids per sample; batch 10 per rank.
SMALL = TableWorkload("t", rows=1000, dim=16, num_features=1, ids_per_sample=2.0)
INTRA, INTER, HBM = 150e9, 25e9, 1000e9  # the default bandwidths (bytes/s)


def equal_tables(n: int, rows: int = 1000, dim: int = 16, ids: float = 1.0) -> list[TableWorkload]:
    return [TableWorkload(f"t{i}", rows=rows, dim=dim, num_features=1, ids_per_sample=ids) for i in range(n)]


# --- cost model ----------------------------------------------------------------------------------------------------

def test_table_wise_cost_by_hand() -> None:
    cost = option_cost(SMALL, TablePlacement("table_wise", [1]), Topology(2, 2, GB), batch_size=10)
    assert cost.memory == [0, 1000 * (16 * 4 + 4)]  # weights + one fp32 Adagrad accumulator per row
    # Owner looks up the 20 samples x 2 ids of both ranks: read 40 rows, then read+write 40 rows and their state.
    assert cost.lookup_s == [0.0, pytest.approx((40 * 64 + 2 * 40 * (64 + 4)) / HBM)]
    # Rank 0 sends 10 x (2 ids x 8 B + 1 length x 4 B) and gets 10 x 16 x 4 B of pooled output (and sends its gradient).
    pair = 10 * (2 * 8 + 4) + 2 * 10 * 16 * 4
    assert cost.comm_s == [pytest.approx(pair / INTRA)] * 2


def test_row_wise_column_wise_data_parallel_costs_by_hand() -> None:
    topo = Topology(2, 2, GB)
    rw = option_cost(SMALL, TablePlacement("row_wise", [0, 1]), topo, batch_size=10)
    assert rw.memory == [500 * 68, 500 * 68]
    assert rw.lookup_s[0] == pytest.approx((20 * 64 + 2 * 20 * 68) / HBM)  # half of the 40 ids
    # With each shard: 10 x (1 id x 8 + 4) in, then partial sums 10 x 16 x 4 out and back; as sender and as shard.
    assert rw.comm_s[0] == pytest.approx(2 * (10 * (8 + 4) + 2 * 10 * 16 * 4) / INTRA)
    cw = option_cost(SMALL, TablePlacement("column_wise", [0, 1]), topo, batch_size=10)
    assert cw.memory == [1000 * (8 * 4 + 4)] * 2  # each column shard keeps its own row-wise state
    assert cw.comm_s[0] == pytest.approx(2 * (10 * (2 * 8 + 4) + 2 * 10 * 8 * 4) / INTRA)
    dp = option_cost(SMALL, TablePlacement("data_parallel", [0, 1]), topo, batch_size=10)
    buffer = 1000 * (16 + 1) * 4  # the replica's fp32 gradient buffer: 16 columns and a lookup count a row
    assert dp.memory == [68000 + buffer] * 2  # a replica and its buffer
    # the rank's own 20 ids looked up, the global batch's 40 rows updated, the buffer zeroed and read back
    assert dp.lookup_s[0] == pytest.approx((20 * 64 + 2 * 40 * 68 + 2 * buffer) / HBM)
    # no ids, no pooled rows: a ring all-reduce of the buffer, 2 (W - 1) / W = 1 of it sent and as much received
    assert dp.comm_s[0] == pytest.approx(2 * buffer / INTRA)
    assert dp.inter_s == [0.0, 0.0]
    across = option_cost(SMALL, TablePlacement("data_parallel", [0, 1, 2, 3]), Topology(4, 2, GB), batch_size=10)
    assert across.comm_s == pytest.approx([2 * 1.5 * buffer / INTER] * 4)  # two nodes: paced by the inter-node hops


def test_inter_node_traffic_uses_the_inter_node_bandwidth() -> None:
    cost = option_cost(SMALL, TablePlacement("table_wise", [0]), Topology(4, 2, GB), batch_size=10)
    pair = 10 * (2 * 8 + 4) + 2 * 10 * 16 * 4
    assert cost.comm_s == pytest.approx([pair / INTRA + 2 * pair / INTER, pair / INTRA, pair / INTER, pair / INTER])


@pytest.mark.parametrize(("optimizer", "dtype", "row_bytes"), [
    ("sgd", "fp32", 64), ("adagrad", "fp32", 64 + 64), ("rowwise_adagrad", "fp32", 64 + 4), ("adam", "fp32", 64 + 128),
    ("rowwise_adam", "fp32", 64 + 68), ("lamb", "fp32", 64 + 128), ("rowwise_adagrad", "fp16", 32 + 4)])
def test_memory_includes_optimizer_state(optimizer: str, dtype: str, row_bytes: int) -> None:
    table = TableWorkload("t", 1000, 16, 1, 1.0, weight_dtype=dtype, optimizer=optimizer)
    assert table.memory_bytes == 1000 * row_bytes


# --- greedy placement ----------------------------------------------------------------------------------------------

def test_equal_tables_spread_evenly() -> None:
    result = Planner(Topology(3, 3, GB), batch_size=64).plan(equal_tables(6), sharding_type="table_wise")
    owners = sorted(p.ranks[0] for p in result.plan.tables.values())
    assert owners == [0, 0, 1, 1, 2, 2]


def test_greedy_balances_better_than_round_robin() -> None:
    rng = random.Random(0)
    tables = [TableWorkload(f"t{i}", rows=rng.randint(1000, 50000), dim=32, num_features=1,
                            ids_per_sample=rng.choice([1, 2, 5, 20])) for i in range(12)]
    topo = Planner(Topology(4, 4, GB), batch_size=256)
    greedy = topo.check(topo.plan(tables, sharding_type="table_wise").plan, tables)
    robin = topo.check(ShardingPlan(4, {t.name: TablePlacement("table_wise", [i % 4]) for i, t in enumerate(tables)}),
                       tables)

    def max_load(result) -> float:  # noqa: ANN001
        return max(sum(c.seconds[r] for c in result.costs.values()) for r in range(4))

    assert max_load(greedy) < max_load(robin)


def test_every_table_is_placed_within_memory() -> None:
    rng = random.Random(1)
    for world, local in [(1, 1), (2, 2), (3, 3), (4, 2), (5, 2)]:
        tables = [TableWorkload(f"t{i}", rows=rng.randint(1, 200_000), dim=rng.choice([8, 64, 128]),
                                num_features=rng.randint(1, 2), ids_per_sample=rng.choice([1, 3, 30]))
                  for i in range(rng.randint(3, 15))]
        topo = Topology(world, local, 400 * 10**6)
        result = Planner(topo, batch_size=512).plan(tables)
        assert result.plan.problems({t.name: (t.rows, t.dim) for t in tables}) == []
        for r in range(world):
            assert sum(c.memory[r] for c in result.costs.values()) <= topo.usable_memory_bytes


def test_a_table_too_big_for_one_rank_is_split() -> None:
    big = TableWorkload("big", rows=10_000_000, dim=64, num_features=1, ids_per_sample=1.0)  # 2.6 GB
    result = Planner(Topology(4, 4, 2 * GB), batch_size=64).plan([big])
    assert result.plan.tables["big"].sharding_type in ("row_wise", "column_wise", "row_wise_routed")


def test_no_shard_is_empty() -> None:
    tables = [TableWorkload("rows3", rows=3, dim=2, num_features=1, ids_per_sample=1.0)]
    for kind in ("row_wise", "column_wise", "table_row_wise"):
        placement = Planner(Topology(4, 4, GB), batch_size=8).plan(tables, sharding_type=kind).plan.tables["rows3"]
        assert len(placement.ranks) == (2 if kind == "column_wise" else 3)


def test_auto_limits_data_parallel_and_table_row_wise() -> None:
    tables = [TableWorkload("tiny", 10, 16, 1, 1.0), TableWorkload("large", 50_000, 16, 1, 1.0)]
    one_node = Planner(Topology(4, 4, GB), batch_size=64).plan(tables).plan
    # 10 rows: costed as the runtime runs it (each rank's own lookups, one all-reduce of 10 x 17 x 4 bytes) a replica
    # costs every rank less than the busiest rank of any other placement: data_parallel
    tiny = one_node.tables["tiny"]
    assert tiny.sharding_type == "data_parallel" and tiny.ranks == [0, 1, 2, 3]
    replicated = option_cost(tables[0], tiny, Topology(4, 4, GB), 64)
    owner = option_cost(tables[0], TablePlacement("table_wise", [0]), Topology(4, 4, GB), 64)
    assert max(replicated.seconds) < max(owner.seconds)
    assert "table_row_wise" not in {p.sharding_type for p in one_node.tables.values()}
    assert one_node.tables["large"].sharding_type != "data_parallel"  # more rows than data_parallel_max_rows
    twrw = Planner(Topology(4, 2, GB), batch_size=64).plan(
        tables, {"large": TableConstraint(sharding_types=("table_row_wise",))}).plan.tables["large"]
    assert twrw.sharding_type == "table_row_wise" and twrw.ranks in ([0, 1], [2, 3])


def test_constraints_are_honored() -> None:
    tables = equal_tables(5)
    constraints = {"t0": TableConstraint(ranks=(2,)), "t1": TableConstraint(sharding_types=("row_wise",), ranks=(1, 3)),
                   "t2": TableConstraint(sharding_types=("column_wise",)), "t3": TableConstraint(ranks=(0, 1))}
    plan = Planner(Topology(4, 4, GB), batch_size=64).plan(tables, constraints).plan
    assert plan.tables["t0"].ranks == [2]
    assert (plan.tables["t1"].sharding_type, plan.tables["t1"].ranks) == ("row_wise", [1, 3])
    assert plan.tables["t2"].sharding_type == "column_wise"
    assert set(plan.tables["t3"].ranks) <= {0, 1}


# --- impossible plans ----------------------------------------------------------------------------------------------

def test_a_table_larger_than_all_memory_is_named_with_its_size_and_the_memory() -> None:
    tables = [TableWorkload("big", rows=40_000_000, dim=128, num_features=1, ids_per_sample=1.0),
              TableWorkload("also_big", rows=40_000_000, dim=128, num_features=1, ids_per_sample=1.0),
              TableWorkload("small", rows=100, dim=128, num_features=1, ids_per_sample=1.0)]
    with pytest.raises(PlanningError) as raised:
        Planner(Topology(2, 2, 10 * GB), batch_size=64).plan(tables)
    message = str(raised.value)
    for part in ("'big' (40,000,000 x 128 fp32 + rowwise_adagrad state: 20.64 GB)", "'also_big'", "9.00 GB",
                 "10.0 GB per rank", "41.28 GB in all"):
        assert part in message, message
    assert "'small'" not in message and "\n" not in message


def test_a_constraint_that_cannot_be_met_is_named() -> None:
    constraints = {"t1": TableConstraint(sharding_types=("data_parallel",), ranks=(0,))}
    with pytest.raises(PlanningError, match=r"'t1' .*cannot be met: data_parallel needs every rank.*\[0\]"):
        Planner(Topology(2, 2, GB), batch_size=64).plan(equal_tables(2), constraints)


def test_pinned_rank_without_room_fails() -> None:
    tables = equal_tables(2, rows=1_000_000, dim=64)  # 260 MB each
    constraints = {name: TableConstraint(ranks=(0,)) for name in ("t0", "t1")}
    with pytest.raises(PlanningError, match=r"'t1'.*does not fit"):
        Planner(Topology(2, 2, 400 * 10**6, reserved_fraction=0.0), batch_size=64).plan(tables, constraints)


# --- from the config: make_plan, manual plans, topology ------------------------------------------------------------

def dlrm(*overrides: str):  # noqa: ANN201
    return compose_config(["+experiment=dlrm", "sharding.topology.memory_per_rank_gb=1", *overrides])


def test_manual_plan_is_honored() -> None:
    cfg = dlrm("sharding=manual_example")
    plan, report = make_plan(cfg, world_size=2, local_world_size=2)
    assert report.source == "manual"
    assert plan.tables["t_cat_3"] == TablePlacement("row_wise", [1, 0], [60000, 40000])
    assert plan.tables["t_cat_1"].sharding_type == "column_wise" and plan.tables["t_cat_2"].ranks == [0, 1]
    assert [plan.tables[f"t_cat_{i}"].ranks for i in (4, 5)] == [[0], [1]]


def test_manual_plan_is_checked() -> None:
    with pytest.raises(PlanningError, match="'t_cat_7' has no placement"):
        make_plan(dlrm("sharding=manual_example", "~sharding.tables.t_cat_7"), 2, 2)
    tight = dlrm("sharding=manual_example", "sharding.topology.memory_per_rank_gb=0.2")
    with pytest.raises(PlanningError, match=r"rank 0 needs \d+\.\d+ MB for .*'t_cat_4' 26\.00 MB.*180\.00 MB for tab"):
        make_plan(tight, 2, 2)


@pytest.mark.parametrize("kind", ["table_wise", "row_wise", "column_wise", "data_parallel", "table_row_wise"])
def test_fixed_sharding_type_applies_to_every_table(kind: str) -> None:
    plan, _ = make_plan(dlrm(f"sharding={kind}", "sharding.topology.local_world_size=1",
                             "sharding.topology.memory_per_rank_gb=4"), 2, 2)
    assert {p.sharding_type for p in plan.tables.values()} == {kind}
    shapes = {t.name: (t.num_embeddings, t.embedding_dim) for t in table_configs(dlrm())}
    assert plan.problems(shapes) == []
    ranks = [tuple(p.ranks) for p in plan.tables.values()]
    if kind == "table_wise":
        assert sorted(ranks) == [(0,)] * 13 + [(1,)] * 13
    elif kind != "table_row_wise":
        assert set(ranks) == {(0, 1)}


def test_workloads_take_bag_sizes_from_the_data_and_constraints() -> None:
    cfg = compose_config(["+experiment=mlperf_dcnv2", "++sharding.constraints={t_cat_0: {ids_per_sample: 5}}"])
    ids = {w.name: w.ids_per_sample for w in table_workloads(cfg)}
    assert (ids["t_cat_20"], ids["t_cat_19"], ids["t_cat_0"]) == (100.0, 12.0, 5.0)


def test_row_cap_caps_every_table() -> None:
    cfg = compose_config(["+experiment=mlperf_dcnv2", "tables.row_cap=1000"])
    rows = [t.num_embeddings for t in table_configs(cfg)]
    assert max(rows) == 1000 and min(rows) == 3


def test_topology_memory_configured_or_detected() -> None:
    assert topology_from_config(TopologyConfig(memory_per_rank_gb=80), 8, 8, "cpu").memory_per_rank_bytes == 80 * GB
    host = topology_from_config(TopologyConfig(), 2, 2, "cpu")
    assert host.device == "cpu" and 0 < host.memory_per_rank_bytes


def test_link_bandwidths_default_by_device_unless_given() -> None:
    """CPU ranks exchange through gloo (0.79 GB/s each way measured), GPUs through NVLink and NICs: one default for
    both made the planner treat a CPU run's all-to-alls as free (and pick row_wise tables 1.4x slower than
    table_wise on 2 processes)."""
    cpu = topology_from_config(TopologyConfig(), 2, 2, "cpu")
    gpu = topology_from_config(TopologyConfig(memory_per_rank_gb=80), 16, 8, "gpu")
    assert (cpu.intra_node_bw, cpu.inter_node_bw) == (1.58 * GB, 1.58 * GB)
    assert (gpu.intra_node_bw, gpu.inter_node_bw) == (150 * GB, 25 * GB)
    given = topology_from_config(TopologyConfig(intra_node_bw_gbps=7.0, inter_node_bw_gbps=3.0), 2, 2, "cpu")
    assert (given.intra_node_bw, given.inter_node_bw) == (7 * GB, 3 * GB)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the memory is detected")
def test_gpu_memory_must_be_configured_without_a_gpu() -> None:
    with pytest.raises(PlanningError, match="set sharding.topology.memory_per_rank_gb"):
        topology_from_config(TopologyConfig(device="cuda"), 2, 2, "cpu")


def test_report_prints_every_table_and_rank_and_round_trips() -> None:
    plan, report = make_plan(dlrm(), 3, 3)
    text = report.format()
    assert all(f"t_cat_{i} " in text for i in range(26))
    assert "table memory / available" in text and "most loaded: rank" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert ShardingPlan.from_dict(data["plan"]) == plan and len(data["ranks"]) == 3
    assert isinstance(report, PlanReport)


def test_validation_names_bad_sharding_settings() -> None:
    typos = find_problems(["+experiment=dlrm", "+sharding.constraints={t_cat_0: {sharding_types: [row_wse]}}",
                           "sharding.type=rowwise"])  # sharding types are Enums: wrong ones fail at composition
    keys = {p.key: p for p in typos}
    assert keys["sharding.type"].hint == "did you mean 'row_wise'?"
    assert "row_wse" in keys["+sharding.constraints"].message and keys["+sharding.constraints"].hint
    cfg = dlrm("+sharding.constraints={t_cat_O: {sharding_types: [row_wise], ranks: [3]}}")
    keys = {p.key: p for p in check_config(cfg)}
    assert "unknown table 't_cat_O'" in keys["sharding.constraints.t_cat_O"].message
    assert "[0, 1)" in keys["sharding.constraints.t_cat_O.ranks"].message
    manual = check_config(dlrm("sharding=manual_example", "world_size=2", "~sharding.tables.t_cat_3"))
    assert [(p.key, p.message) for p in manual] == [("sharding.tables", "table 't_cat_3' has no placement in the "
                                                                        "sharding plan")]
    assert check_config(dlrm("sharding=manual_example", "world_size=2")) == []


def test_auto_never_column_shards_row_state_optimizers() -> None:
    """Column shards of a rowwise_adagrad table keep a per-row state per shard: not the unsharded math."""
    from recframe.distributed.planner import Planner, TableWorkload, Topology

    topology = Topology(world_size=4, local_world_size=4, memory_per_rank_bytes=10**12)
    for optimizer, column_allowed in (("rowwise_adagrad", False), ("lamb", False), ("adagrad", True)):
        tables = [TableWorkload(name=f"t{i}", rows=100_000, dim=256, num_features=1, ids_per_sample=1.0,
                                optimizer=optimizer) for i in range(8)]
        result = Planner(topology, batch_size=2048).plan(tables, {}, sharding_type="auto")
        kinds = {p.sharding_type for p in result.plan.tables.values()}
        assert column_allowed or "column_wise" not in kinds, (optimizer, kinds)

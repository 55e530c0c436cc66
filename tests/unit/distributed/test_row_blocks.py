"""Row blocks of equal id mass (``sharding.row_blocks=id_mass``, issue 24): the blocks, the cost model's ids per block
(the simulator's, from the same id law), and MLPerf's plans under Zipf ids scored by the step simulator."""

from __future__ import annotations

import numpy as np
import pytest

from recframe.config.compose import compose_config
from recframe.distributed.layout import ShardLayout
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner.cost import CostSheet, TableWorkload, option_cost
from recframe.distributed.planner.id_law import IdLaw
from recframe.distributed.planner.simulate import StepWorkload, expected_slot_ids
from recframe.distributed.planner.step_time import PROFILES
from recframe.distributed.planner.topology import Topology
from recframe.distributed.sharding.base import even_split
from recframe.embedding.config import TableConfig
from recframe.training.planning import make_plan, table_workloads
from recframe.training.simulation import score_plan, step_workload


@pytest.mark.parametrize(("rows", "shards"), [(10, 3), (17, 17), (1000, 4), (40_000_000, 8), (40_000_000, 512)])
def test_balanced_sizes_tile_the_rows(rows: int, shards: int) -> None:
    for exponent in (0.0, 1.05):
        sizes = IdLaw(exponent).balanced_sizes(rows, shards)
        assert len(sizes) == shards and sum(sizes) == rows and min(sizes) >= 1
        if exponent == 0:
            assert sorted(sizes) == sorted(even_split(rows, shards))
    with pytest.raises(ValueError):
        IdLaw(1.05).balanced_sizes(3, 4)


def test_balanced_blocks_hold_equal_id_mass_but_a_hot_row_stays_whole() -> None:
    law, rows = IdLaw(1.05), 40_000_000
    for shards in (8, 512):
        ends = np.cumsum([0, *law.balanced_sizes(rows, shards)])
        mass = law.mass(rows, ends[:-1], ends[1:])
        even = np.cumsum([0, *even_split(rows, shards)])
        if shards == 8:  # every block within 7% of 1/8 (even blocks: the first draws 89%)
            assert mass.max() * shards < 1.07 and law.mass(rows, [0], [even[1]])[0] > 0.85
        else:  # row 0 alone draws 5.8% of the ids, 30 times a 512th: its block is that row, the cold blocks even out
            assert ends[1] == 1 and mass[0] == pytest.approx(0.0584, abs=1e-3)
            assert np.median(mass) * shards == pytest.approx(1.0, abs=0.25)


def test_work_balanced_blocks_hold_equal_lookup_work() -> None:
    """A pooled row shard reads each of its ids once and reads and writes each distinct row (weights and state):
    equal id mass leaves the cold blocks, whose ids are nearly all distinct rows, ~2x the hot ones' work."""
    law, rows, draws, weight = IdLaw(1.05), 40_000_000, 8192 * 64 * 100.0, 2 * (512 + 4) / 512
    spread = {}
    for name, kwargs in (("mass", {}), ("work", {"draws": draws, "distinct_weight": weight})):
        ends = np.cumsum([0, *law.balanced_sizes(rows, 8, **kwargs)])
        work = draws * law.mass(rows, ends[:-1], ends[1:]) + weight * law.expected_unique(rows, ends[:-1], ends[1:],
                                                                                          draws)
        spread[name] = work.max() / work.min()
    assert spread["work"] < 1.03 and spread["mass"] > 2.5


def test_the_planner_sizes_skewed_row_blocks_by_their_work() -> None:
    """MLPerf at 64 ranks, 8 a node, the synthetic default's Zipf ids: t_cat_20 (100 ids a sample) is table_row_wise;
    on one node in blocks of equal id mass its coldest rank was estimated at 25.9 ms, in blocks of equal work
    21.4 ms (its node's lookups 4.8-5.5 ms, were 3.3-10.3); over four nodes, each reducing its own shards' partial
    sums, 20.8 ms, its own lookups at most 1.6 ms a rank (the hottest rows, each over 1/32 of the ids, are blocks
    of one row: 0.6-1.6 ms on its 32 ranks)."""
    cfg = compose_config(["+experiment=mlperf_dcnv2", "world_size=64", "sharding.topology.local_world_size=8"])
    plan, report = make_plan(cfg, world_size=64, local_world_size=8)
    assert report.busiest.total_ms < 21.0
    placement = plan.tables["t_cat_20"]
    assert placement.sharding_type == "table_row_wise" and len(placement.ranks) == 32
    assert len({r // 8 for r in placement.ranks}) == 4
    table = next(t for t in table_workloads(cfg) if t.name == "t_cat_20")
    own = option_cost(table, placement, Topology(64, 8, 10**12), cfg.data.batch_size).lookup_s
    assert max(own[r] for r in placement.ranks) < 1.6e-3


@pytest.mark.parametrize("kind", ["row_wise", "table_row_wise", "row_wise_routed"])
def test_cost_counts_a_block_s_ids_by_the_id_law_as_the_simulator_does(kind: str) -> None:
    """The ids the cost model gives each row block (lookups and the input dist) are the simulator's expected ids of
    the block's slot: ``B x L x`` the law's mass of its rows, per sender (routed: the distinct ones among them,
    each sent once, and the shard looks up every rank's)."""
    rows, world, batch, ids = 100_000, 4, 64, 5.0
    routed = kind == "row_wise_routed"
    sizes = IdLaw(1.05).balanced_sizes(rows, world, batch * ids if routed else None) if kind != "row_wise" else None
    placement = TablePlacement(kind, list(range(world)), sizes)
    t = TableWorkload("t", rows, 8, 1, ids, optimizer="sgd", id_exponent=1.05)
    layout = ShardLayout([TableConfig(name="t", num_embeddings=rows, embedding_dim=8, feature_names=["f"])],
                         ShardingPlan(world, {"t": placement}), world)
    work = StepWorkload(batch_size=batch, ids_per_feature={"f": ids}, zipf_exponent=1.05, optimizers={"t": "sgd"},
                        dense_flops_per_sample=0.0, dense_parameters=0)
    sent = expected_slot_ids(layout, work, IdLaw(1.05))  # per sender, slot order = rank order here
    bounds = placement.shard_bounds(rows, 8)
    starts, ends = [a for a, _ in bounds], [b for _, b in bounds]
    share = t.row_share(starts, ends)
    per_sender = IdLaw(1.05).expected_unique(rows, starts, ends, batch * ids) if routed else batch * ids * share
    np.testing.assert_allclose(sent, per_sender, rtol=1e-12)
    topo = Topology(world, 2, 10**12)
    sheet = CostSheet(t, topo, batch)
    placement.rule.add_cost(sheet, list(range(world)), bounds)
    uniform = CostSheet(TableWorkload("t", rows, 8, 1, ids, optimizer="sgd"), topo, batch)
    placement.rule.add_cost(uniform, list(range(world)), bounds)
    # a shard's lookup bytes: its ids (G L x share) read, and as many rows updated (at most its rows)
    looked = world * per_sender
    expected = looked * 8 * 4 + 2 * np.minimum(looked, np.diff([0, *np.cumsum([b - a for a, b in bounds])])) * 8 * 4
    routed_pool = 4 * batch * ids * 8 * 4 if routed else 0.0  # rows expanded and pooled, forward and backward
    np.testing.assert_allclose(sheet.lookup, expected + routed_pool, rtol=1e-12)
    assert not np.allclose(sheet.lookup, uniform.lookup)  # the law, not rows / R


def test_uniform_ids_keep_the_even_cost() -> None:
    t = TableWorkload("t", 1000, 8, 1, 3.0)
    placement = TablePlacement("row_wise_routed", [0, 1, 2])
    topo = Topology(3, 3, 10**12)
    assert option_cost(t, placement, topo, 16) == option_cost(
        TableWorkload("t", 1000, 8, 1, 3.0, id_exponent=0.0), placement, topo, 16)


def _mlperf(world: int, *over: str):
    cfg = compose_config(["+experiment=mlperf_dcnv2", f"world_size={world}", "sharding.topology.local_world_size=8",
                          *over])
    return cfg, make_plan(cfg, world_size=world, local_world_size=8)


def test_id_mass_only_with_a_skewed_law() -> None:
    """``row_blocks=id_mass`` with uniform data (``data.zipf_exponent=0``) plans as ``even``; ``even`` ignores the
    data's law (the cost model's ids spread evenly over rows, as before)."""
    cfg, (plan, _) = _mlperf(64, "sharding.row_blocks=id_mass", "data.zipf_exponent=0")
    assert {t.id_exponent for t in table_workloads(cfg)} == {0.0}
    _, (even, _) = _mlperf(64, "sharding.row_blocks=even")
    assert plan == even
    cfg, _ = _mlperf(64, "sharding.row_blocks=id_mass")
    assert {t.id_exponent for t in table_workloads(cfg)} == {1.05}


def test_mlperf_512_under_zipf_ids() -> None:
    """At 512 ranks with the synthetic data's Zipf 1.05 ids, the plan made with ``row_blocks=id_mass`` simulates
    20 times faster than the ``even`` plan (whose routed 40M-row tables' first blocks hold most of the distinct
    ids: 1.6 s a step; before routed ids were sent once each, 14.5 s; BENCHMARKS.md), faster than the ``even``
    plan with uniform ids, and balanced (max/mean <= 1.10 by the simulator and the cost model); its row splits
    of the 40M-row tables are cut by the id law (small hot blocks first)."""
    cfg, (even, _) = _mlperf(512, "sharding.row_blocks=even")
    profile = PROFILES["h100"]
    slow = score_plan(cfg, even, 8, profile, step_workload(cfg, None, False)).times
    uniform = score_plan(cfg, even, 8, profile, step_workload(cfg, 0.0, False)).times
    cfg, (plan, report) = _mlperf(512, "sharding.row_blocks=id_mass")
    fast = score_plan(cfg, plan, 8, profile, step_workload(cfg, None, False)).times
    assert fast.step_ms * 20 < slow.step_ms and fast.step_ms < uniform.step_ms, (fast.step_ms, slow.step_ms)
    assert fast.max_ms / fast.mean_ms <= 1.10 and report.imbalance <= 1.10
    hot = [plan.tables[n] for n in ("t_cat_0", "t_cat_9", "t_cat_19", "t_cat_20", "t_cat_21")]  # 40M rows each
    assert all(p.rule.row_split and p.shard_sizes is not None and p.shard_sizes[0] < p.shard_sizes[-1] for p in hot)
    assert report.busiest.total_ms < 50  # the cost model, counting the law: 46.4 ms when set


def test_auto_follows_the_data_law() -> None:
    """The default ``row_blocks=auto`` plans as ``id_mass`` where the data declares a skewed law (the synthetic
    data's Zipf 1.05: cut by the law at 512 ranks, unlike ``even``) and as ``even`` with uniform ids."""
    cfg, (auto, _) = _mlperf(512)
    assert cfg.sharding.row_blocks == "auto" and {t.id_exponent for t in table_workloads(cfg)} == {1.05}
    _, (by_mass, _) = _mlperf(512, "sharding.row_blocks=id_mass")
    _, (even, _) = _mlperf(512, "sharding.row_blocks=even")
    assert auto == by_mass and auto != even
    _, (uniform_auto, _) = _mlperf(512, "data.zipf_exponent=0")
    _, (uniform_even, _) = _mlperf(512, "sharding.row_blocks=even", "data.zipf_exponent=0")
    assert uniform_auto == uniform_even

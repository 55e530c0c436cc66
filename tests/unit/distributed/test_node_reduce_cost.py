"""table_row_wise's node-level reduce (issue 24) in the cost model and the step simulator: both charge what the
runtime sends (``node_reduce.NodeReduceLayout``), and the flat exchange where the runtime keeps it; a table on
several nodes reduces on each of them (one group per node, a node's lone rank flat)."""

from __future__ import annotations

import numpy as np
import pytest

from recframe.distributed.layout import ShardLayout
from recframe.distributed.node_reduce import NodeReduceLayout
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner.cost import CostSheet, TableWorkload
from recframe.distributed.planner.simulate import StepWorkload, count_step
from recframe.distributed.planner.topology import Topology
from recframe.distributed.sharding.row_wise import ROW_WISE
from recframe.distributed.sharding.table_row_wise import TABLE_ROW_WISE
from recframe.embedding.config import TableConfig

BATCH, ROWS, DIM = 10, 1000, 4
POOLED = ("node_reduce_scatter", "output_forward", "output_backward", "node_all_gather")


def _setup(world: int, local: int, ranks: list[int]) -> tuple[list[TableConfig], ShardingPlan, StepWorkload]:
    tables = [TableConfig(name="t", num_embeddings=ROWS, embedding_dim=DIM, feature_names=["ft"]),
              TableConfig(name="u", num_embeddings=ROWS, embedding_dim=2, feature_names=["fu"])]
    plan = ShardingPlan(world, {"t": TablePlacement("table_row_wise", ranks),
                                "u": TablePlacement("table_wise", [world - 1])})
    work = StepWorkload(batch_size=BATCH, ids_per_feature={"ft": 2.0, "fu": 1.0}, zipf_exponent=0.0,
                        optimizers={"t": "sgd", "u": "sgd"}, dense_flops_per_sample=0.0, dense_parameters=0)
    return tables, plan, work


# (world, ranks per node, t's ranks): one node; two nodes (2 + 3 ranks); two whole nodes and a lone rank on a third
# (it sends flat); all ranks of two nodes of 8
CASES = [(4, 2, [0, 1]), (8, 4, [4, 5, 6]), (16, 8, [8, 9, 10, 11]), (8, 4, [0, 1, 4, 5, 6]),
         (16, 4, [0, 1, 2, 3, 4, 5, 6, 7, 12]), (16, 8, list(range(16)))]


@pytest.mark.parametrize(("world", "local", "ranks"), CASES)
def test_simulated_pooled_bytes_are_the_runtime_s_send_widths(world: int, local: int, ranks: list[int]) -> None:
    """Each rank's pooled bytes sent forward = B x 4 x the columns ``NodeReduceExchange`` sends the other ranks,
    and the reduce-scatter moves (k - 1) padded chunks of ceil(W / k) destinations a member of a node's k ranks."""
    tables, plan, work = _setup(world, local, ranks)
    counts = count_step(tables, plan, local, work)
    reduce = NodeReduceLayout(ShardLayout(tables, plan, world), local)
    groups = TABLE_ROW_WISE.reduce_groups(ranks, local)
    assert [g.ranks for g in reduce.groups] == groups == [
        tuple(r for r in ranks if r // local == node) for node in sorted({r // local for r in ranks})
        if sum(r // local == node for r in ranks) > 1]
    forward = counts.phases["output_forward"]
    for rank in range(world):
        widths = reduce.send_widths(rank)
        expected = BATCH * 4 * (sum(widths) - widths[rank])
        assert forward.sent_intra[rank] + forward.sent_inter[rank] == pytest.approx(expected)
    chunk = np.zeros(world)
    for group in groups:
        k, slots = len(group), -(-world // len(group))
        chunk[list(group)] = (k - 1) * slots * BATCH * DIM * 4
    np.testing.assert_allclose(counts.phases["node_reduce_scatter"].sent_intra, chunk)
    np.testing.assert_allclose(counts.phases["node_all_gather"].recv_intra, chunk)
    assert counts.phases["node_reduce_scatter"].collectives == 1


@pytest.mark.parametrize(("world", "local", "ranks"), CASES)
def test_cost_model_charges_the_node_reduce_as_the_simulator_counts_it(world: int, local: int,
                                                                       ranks: list[int]) -> None:
    """The table's output terms (sent + received a rank, by link) equal the simulator's pooled phases of that table;
    between nodes a destination receives the table's rows once per node of its ranks, not once per shard."""
    tables, plan, work = _setup(world, local, ranks)
    only_t = ShardingPlan(world, {"t": plan.tables["t"]})
    counts = count_step(tables[:1], only_t, local, StepWorkload(
        batch_size=BATCH, ids_per_feature={"ft": 2.0}, zipf_exponent=0.0, optimizers={"t": "sgd"},
        dense_flops_per_sample=0.0, dense_parameters=0))
    sheet = CostSheet(TableWorkload("t", ROWS, DIM, 1, 2.0, optimizer="sgd"), Topology(world, local, 10**12), BATCH)
    sheet.node_reduced_output(ranks, TABLE_ROW_WISE.reduce_groups(ranks, local))
    for link in ("intra", "inter"):
        simulated = sum(getattr(counts.phases[p], f"sent_{link}") + getattr(counts.phases[p], f"recv_{link}")
                        for p in POOLED)
        np.testing.assert_allclose(getattr(sheet.traffic, link), simulated)
    nodes = {r // local for r in ranks}
    far = [r for r in range(world) if r // local not in nodes]
    np.testing.assert_allclose(sheet.traffic.inter[far], len(nodes) * BATCH * DIM * 8)  # flat: once a shard
    flat = CostSheet(sheet.table, sheet.topo, BATCH)
    ROW_WISE.add_cost(flat, ranks, ROW_WISE.bounds(ranks, None, ROWS, DIM))
    assert sheet.traffic.inter.sum() < flat.traffic.inter.sum() * len(nodes) / (len(ranks) - 0.5)


def test_table_row_wise_add_cost_is_flat_on_one_node_and_reduced_on_several() -> None:
    """One node (or one rank, or one rank on each of its nodes): table_row_wise costs what row_wise costs and the
    simulator has no node phase; two or more ranks on a node of a world of several: the node-reduced terms."""
    table = TableWorkload("t", ROWS, DIM, 1, 2.0, optimizer="sgd")
    for world, local, ranks, reduced in [(4, 4, [0, 1, 2, 3], False), (4, 2, [1], False), (4, 2, [0, 1], True),
                                         (4, 2, [1, 2], False), (6, 2, [0, 1, 3], True)]:
        topo = Topology(world, local, 10**12)
        bounds = TABLE_ROW_WISE.bounds(ranks, None, ROWS, DIM)
        twrw, rw = CostSheet(table, topo, BATCH), CostSheet(table, topo, BATCH)
        TABLE_ROW_WISE.add_cost(twrw, ranks, bounds)
        ROW_WISE.add_cost(rw, ranks, bounds)
        same = np.allclose(twrw.traffic.intra, rw.traffic.intra) and np.allclose(twrw.traffic.inter, rw.traffic.inter)
        assert same != reduced, (world, local, ranks)
        assert twrw.lookup.tolist() == rw.lookup.tolist() and twrw.memory.tolist() == rw.memory.tolist()
        tables, plan, work = _setup(world, local, ranks)
        counts = count_step(tables, plan, local, work)
        assert (counts.phases["node_reduce_scatter"].collectives == 1) == reduced

"""The step simulator (issue 24): bytes counted by hand on tiny plans, the id law against the synthetic data, the
expected ids per slot against the runtime's own routing of a real batch, and the time model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_hash import zipf_ids
from recframe.distributed.input_dist import InputDist
from recframe.distributed.layout import ShardLayout
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner.id_law import IdLaw
from recframe.distributed.planner.simulate import StepWorkload, count_step, expected_slot_ids
from recframe.distributed.planner.step_time import PROFILES, DeviceProfile, step_times
from recframe.embedding.config import TableConfig


def _table(name: str, rows: int, dim: int) -> TableConfig:
    return TableConfig(name=name, num_embeddings=rows, embedding_dim=dim, feature_names=[f"f{name}"])


def _work(ids: dict[str, float], batch: int = 10, zipf: float = 0.0, flops: float = 0.0,
          params: int = 0) -> StepWorkload:
    return StepWorkload(batch_size=batch, ids_per_feature=ids, zipf_exponent=zipf,
                        optimizers={f[1:]: "sgd" for f in ids}, dense_flops_per_sample=flops, dense_parameters=params)


def test_table_wise_and_row_wise_bytes_by_hand() -> None:
    """2 ranks, B = 10, uniform ids, sgd: table a (100 x 4, 1 id) table_wise on rank 1, table b (100 x 4, 2 ids)
    row_wise 50/50 on ranks 0 and 1."""
    tables = [_table("a", 100, 4), _table("b", 100, 4)]
    plan = ShardingPlan(2, {"a": TablePlacement("table_wise", [1]), "b": TablePlacement("row_wise", [0, 1])})
    counts = count_step(tables, plan, 2, _work({"fa": 1.0, "fb": 2.0}))
    # input: to rank 0 a flag (8) + b's lengths (10 x 8) + its ids (10 x 2 x 1/2 x 8) = 168; to rank 1 a flag,
    # a's lengths and 10 ids (160) and b's lengths and 10 ids (160) = 328
    inp = counts.phases["input"]
    assert inp.sent_intra.tolist() == pytest.approx([328.0, 168.0])
    assert inp.recv_intra.tolist() == pytest.approx([168.0, 328.0])
    assert inp.sent_inter.tolist() == pytest.approx([0.0, 0.0]) and inp.collectives == 2
    # pooled outputs: rank 0 holds 4 columns (b's shard), rank 1 8 (a, b's shard): B x columns x 4 bytes
    assert counts.phases["output_forward"].sent_intra.tolist() == pytest.approx([160.0, 320.0])
    assert counts.phases["output_backward"].sent_intra.tolist() == pytest.approx([320.0, 160.0])
    # lookups, global batch 20: a looks up 20 rows (20 x 16 bytes) and writes 20 pooled rows (20 x 16); backward
    # reads 20 gradient rows and reads + writes 100 (1 - e^-0.2) distinct rows (16 bytes, no sgd state)
    # b: each shard gets 20 of the 40 ids: the same forward; 50 (1 - e^-0.4) distinct rows of its 50
    a_back = 320 + 100 * (1 - math.exp(-0.2)) * 32
    b_back = 320 + 50 * (1 - math.exp(-0.4)) * 32
    assert counts.lookup_forward.tolist() == pytest.approx([640.0, 1280.0])
    np.testing.assert_allclose(counts.lookup_backward, [b_back, a_back + b_back], rtol=1e-4)


def test_data_parallel_and_routed_bytes_by_hand() -> None:
    """A data_parallel table's ids stay on their rank (each replica looks up its own samples) and one ring all-reduce
    sums the replicas' gradients and row counts; a routed shard gets one count (not B lengths) and each rank's
    distinct ids once, and returns one row per distinct id."""
    tables = [_table("c", 10, 2), _table("r", 100, 4)]
    plan = ShardingPlan(2, {"c": TablePlacement("data_parallel", [0, 1]),
                            "r": TablePlacement("row_wise_routed", [0, 1])})
    counts = count_step(tables, plan, 2, _work({"fc": 1.0, "fr": 1.0}))
    d = 50 * (1 - math.exp(-10 / 100))  # distinct rows of a 50-row block among a rank's 10 uniform ids (~4.76 of 5)
    # to each rank: flag 8 + r's count 8 + r's d distinct ids x 8 (nothing of c)
    assert counts.phases["input"].sent_intra.tolist() == pytest.approx([16.0 + 8 * d] * 2)
    assert counts.phases["output_forward"].sent_intra.tolist() == pytest.approx([0.0, 0.0])
    assert counts.phases["output_backward"].sent_intra.tolist() == pytest.approx([0.0, 0.0])
    # 10 rows x (2 gradient columns + 1 count) x 4 bytes, 2 (W - 1) / W = 1 of it sent and received
    assert counts.phases["replica_all_reduce"].sent_intra.tolist() == pytest.approx([120.0, 120.0])
    assert counts.phases["replica_all_reduce"].recv_intra.tolist() == pytest.approx([120.0, 120.0])
    assert counts.phases["replica_all_reduce"].collectives == 1
    assert counts.phases["routed_forward"].sent_intra.tolist() == pytest.approx([16 * d] * 2)  # d rows x 4 x 4 bytes
    assert counts.phases["routed_backward"].recv_intra.tolist() == pytest.approx([16 * d] * 2)
    # c: its own 10 ids x 8 bytes read + 10 bags x 8 written; r: the 2 d ids both ranks sent read (16 bytes) + their
    # rows out, and the rank expands its rows to its 10 ids and pools them (2 x 10 x 16)
    assert counts.lookup_forward.tolist() == pytest.approx([160.0 + 2 * d * 32 + 320.0] * 2)
    # c alone, backward: 10 bag gradients read (80), the distinct rows of the global batch's 20 uniform draws of 10
    # rows updated (sgd: 8 bytes read and written, 16) and their summed gradient read (8), the 10 x 3 buffer zeroed
    # and read back (240), the 10 ids' gradients added in (80)
    alone = count_step(tables[:1], ShardingPlan(2, {"c": TablePlacement("data_parallel", [0, 1])}), 2,
                       _work({"fc": 1.0}))
    distinct = 10 * (1 - math.exp(-2))  # the id law's expected distinct rows of 20 uniform draws
    assert alone.lookup_backward.tolist() == pytest.approx([80 + distinct * (16 + 8) + 240 + 80] * 2)


def test_nodes_split_the_traffic_by_link_class() -> None:
    """4 ranks, 2 a node, a table_wise table on rank 0: ranks 1 (same node) and 2, 3 (the other) send it ids."""
    plan = ShardingPlan(4, {"a": TablePlacement("table_wise", [0])})
    inp = count_step([_table("a", 100, 4)], plan, 2, _work({"fa": 1.0})).phases["input"]
    to_owner = 8 + 80 + 80
    assert inp.recv_intra[0] == to_owner and inp.recv_inter[0] == 2 * to_owner
    # ranks 0 and 1 send the other node's two ranks a flag each; ranks 2 and 3 send the owner its ids and rank 1 a flag
    assert inp.sent_inter.tolist() == pytest.approx([16.0, 16.0, to_owner + 8, to_owner + 8])


def test_the_id_law_is_the_synthetic_data_s() -> None:
    """Shares of ids per block and distinct rows match ids drawn by the synthetic generator's Zipf law."""
    u = np.random.default_rng(0).random(400_000)
    for exponent, rows in ((0.0, 1000), (1.05, 100_000), (1.0, 5000)):
        ids = zipf_ids(u, rows, exponent)
        law = IdLaw(exponent)
        edges = [0, 1, 10, rows // 3, rows]
        sampled = np.histogram(ids, bins=edges)[0] / len(ids)
        np.testing.assert_allclose(law.mass(rows, edges[:-1], edges[1:]), sampled, atol=3e-3)
        few = ids[:5000]
        expected = law.expected_unique(rows, [0, rows // 3], [rows // 3, rows], 5000)
        got = [len(np.unique(few[few < rows // 3])), len(np.unique(few[few >= rows // 3]))]
        np.testing.assert_allclose(expected, got, rtol=0.05, atol=5)


@pytest.mark.parametrize("kind", ["row_wise", "table_row_wise", "row_wise_routed", "column_wise"])  # replicas: none
def test_expected_ids_per_slot_match_the_runtime_s_routing(kind: str) -> None:
    """The ids the simulator expects in each slot equal the runtime's bucketing (InputDist) of real synthetic
    batches (Zipf 1.05), within sampling noise."""
    tables = [TableConfig(name="t", num_embeddings=5000, embedding_dim=8, feature_names=["x", "y"]),
              _table("u", 300, 8)]
    ranks = [0, 1] if kind == "table_row_wise" else [0, 1, 2, 3]
    plan = ShardingPlan(4, {"t": TablePlacement(kind, ranks),
                            "u": TablePlacement("table_wise", [2])})
    work = _work({"x": 3.0, "y": 1.0, "fu": 2.0}, batch=4096, zipf=1.05)
    layout = ShardLayout(tables, plan, 4)
    slots = layout.slots()
    own = sum(1 for s in slots if s.rank == 0)
    route = InputDist(layout.feature_names, ["t", "t", "u"], [5000, 5000, 300], ["error"] * 3, slots, 4, 0, None,
                      check_ids=False, receive_order=list(range(own)))
    gen = SyntheticCriteo(SyntheticConfig(num_dense_features=0, table_sizes=(5000, 5000, 300),
                                          ids_per_feature=(3, 1, 2), zipf_exponent=1.05,
                                          sparse_names=("x", "y", "fu")), seed=0)
    values, weights, lengths, keys = route._bucketize(gen.batch(index=0, batch_size=4096).sparse_features)
    if kind == "row_wise_routed":  # each distinct id once
        _, _, lengths, _ = route._distinct_routed(values, weights, keys, 4096)
    sampled = lengths.view(len(slots), 4096).sum(dim=1).double().numpy()
    np.testing.assert_allclose(expected_slot_ids(layout, work, IdLaw(1.05)), sampled, rtol=0.05, atol=40)


def test_step_time_is_synchronous_and_hosts_share_their_cores() -> None:
    """Each phase lasts as long as its slowest rank; CPU ranks of one node divide the compute rates; one rank pays no
    collective latency."""
    tables = [_table("a", 100, 4), _table("b", 100, 4)]
    plan = ShardingPlan(2, {"a": TablePlacement("table_wise", [1]), "b": TablePlacement("table_wise", [1])})
    counts = count_step(tables, plan, 2, _work({"fa": 1.0, "fb": 1.0}, flops=1e6, params=1000))
    profile = DeviceProfile("t", lookup_gbps=1e-6, intra_node_gbps=1e-6, inter_node_gbps=1e-6, matmul_tflops=1e-3,
                            latency_us=100.0, step_overhead_ms=1.0)
    times = step_times(counts, profile)
    assert times.phase_ms["lookup_forward"][0] == 0.0 and times.phase_ms["lookup_forward"][1] > 0
    assert times.phase_ms["dense"].tolist() == pytest.approx([30.0, 30.0])  # 3 x 1e6 x 10 FLOPs at 1e9 FLOP/s
    timed = [m for name, m in times.phase_ms.items() if not name.endswith(("_intra", "_inter"))]
    assert times.step_ms == pytest.approx(sum(m.max() for m in timed) + 1.0)  # every phase waits for its slowest rank
    assert times.step_ms >= times.max_ms > times.mean_ms  # rank 0 waits for rank 1's lookups
    # at 1,000 bytes/s a byte takes 1 ms; 2 collectives of 0.1 ms
    assert times.phase_ms["input"][0] == pytest.approx(max(counts.phases["input"].sent_intra[0],
                                                           counts.phases["input"].recv_intra[0]) + 0.2)
    shared = step_times(counts, profile.replace(shares_host=True))
    assert shared.phase_ms["dense"].tolist() == pytest.approx([60.0, 60.0])
    alone = step_times(count_step(tables, ShardingPlan(1, {"a": TablePlacement("table_wise", [0]),
                                                          "b": TablePlacement("table_wise", [0])}), 1,
                                  _work({"fa": 1.0, "fb": 1.0})), profile)
    assert alone.phase_ms["input"].tolist() == [0.0] and alone.phase_ms["dense_all_reduce"].tolist() == [0.0]


def test_oversubscribed_hosts_slow_their_ranks_compute() -> None:
    """More ranks on a host than it has cores: lookups and dense work take ``oversubscribed_slowdown`` times their
    even share of the host's rates; at or below the core count (and for ranks with their own device) the even share
    alone; communication is not slowed."""
    tables = [_table("a", 100, 4), _table("b", 100, 4), _table("c", 100, 4)]
    profile = DeviceProfile("t", lookup_gbps=1e-6, intra_node_gbps=1e-6, inter_node_gbps=1e-6, matmul_tflops=1e-3,
                            latency_us=0.0, step_overhead_ms=0.0, shares_host=True, cores=2,
                            oversubscribed_slowdown=1.5)
    work = _work({"fa": 1.0, "fb": 1.0, "fc": 1.0}, flops=1e6)
    by_world = {}
    for world in (2, 3):
        plan = ShardingPlan(world, {n: TablePlacement("table_wise", [i % world]) for i, n in enumerate("abc")})
        counts = count_step(tables, plan, world, work)
        by_world[world] = (counts, step_times(counts, profile), step_times(counts, profile.replace(shares_host=False)))
    counts, two, own = by_world[2]
    assert two.phase_ms["dense"].tolist() == pytest.approx([60.0, 60.0])  # 30 ms alone, 2 ranks on 2 cores
    np.testing.assert_allclose(two.phase_ms["lookup_forward"], 2 * own.phase_ms["lookup_forward"])
    counts, three, own = by_world[3]
    assert three.phase_ms["dense"].tolist() == pytest.approx([135.0] * 3)  # 3 ranks on 2 cores: 3 x 30 x 1.5
    np.testing.assert_allclose(three.phase_ms["lookup_backward"], 4.5 * own.phase_ms["lookup_backward"])
    np.testing.assert_allclose(three.phase_ms["output_forward"], own.phase_ms["output_forward"])
    assert profile.replace(cores=0).compute_share(3, 3) == 3  # cores unknown: never oversubscribed
    assert profile.compute_share(8, 4) == pytest.approx(6.0)  # a node of 8 in a world of 4 holds 4 ranks


def test_data_parallel_as_an_all_reduce() -> None:
    """With data_parallel_all_reduce (TorchRec's way) a replica looks up its own samples, sends no ids, and the table's
    dense gradient joins the dense parameters' ring all-reduce (2 (W - 1) / W x (P + R x D) x 4 bytes each way),
    every row updated; recframe's own all-reduce of gradients and counts is then not counted."""
    plan = ShardingPlan(2, {"c": TablePlacement("data_parallel", [0, 1])})
    work = StepWorkload(batch_size=10, ids_per_feature={"fc": 1.0}, zipf_exponent=0.0, optimizers={"c": "sgd"},
                        dense_flops_per_sample=0.0, dense_parameters=30, data_parallel_all_reduce=True)
    counts = count_step([_table("c", 10, 2)], plan, 2, work)
    assert counts.phases["input"].sent_intra.tolist() == [8.0, 8.0]  # the flag alone
    assert counts.phases["output_backward"].sent_intra.tolist() == [0.0, 0.0]
    assert counts.phases["dense_all_reduce"].sent_intra.tolist() == pytest.approx([200.0, 200.0])  # (30 + 20) x 4
    assert counts.phases["replica_all_reduce"].sent_intra.tolist() == [0.0, 0.0]
    assert counts.phases["replica_all_reduce"].collectives == 0
    # 10 own ids (8 bytes) + 10 bags (8); backward: 10 gradient rows + the whole 10 x 2 gradient read (4 bytes a
    # value) and every row read and written (8 bytes, sgd)
    assert counts.lookup_forward.tolist() == [160.0, 160.0]
    assert counts.lookup_backward.tolist() == [80.0 + 80.0 + 160.0] * 2


@pytest.mark.parametrize(("world", "local"), [(2, 2), (4, 4), (4, 2), (16, 8)])
def test_data_parallel_cost_is_the_runtime_s_traffic(world: int, local: int) -> None:
    """The cost model charges data_parallel what the simulator counts the runtime sending (issue 24): no ids and no
    pooled rows in the all-to-alls, one ring all-reduce of the replica's gradients and row counts, R x (D + 1) x 4
    bytes, 2 (W - 1) / W of it sent and as much received by every rank, intra-node on one node, else paced by
    the inter-node hops; it does not grow with the world. Lookups: the rank's own B x L ids."""
    from recframe.distributed.planner.cost import CostSheet, TableWorkload
    from recframe.distributed.planner.topology import Topology
    from recframe.distributed.sharding.data_parallel import DATA_PARALLEL

    batch, rows, dim, ids = 10, 1000, 4, 3.0
    plan = ShardingPlan(world, {"t": TablePlacement("data_parallel", list(range(world)))})
    counts = count_step([_table("t", rows, dim)], plan, local, _work({"ft": ids}, batch=batch))
    sheet = CostSheet(TableWorkload("t", rows, dim, 1, ids, optimizer="sgd"), Topology(world, local, 10**12), batch)
    DATA_PARALLEL.add_cost(sheet, list(range(world)), [(0, rows)] * world)
    flag = 8  # the simulator's weights flag to every peer: the only input bytes
    ring = 2.0 * (world - 1) / world * rows * (dim + 1) * 4
    for link in ("intra", "inter"):
        peers = np.full(world, float(local - 1 if link == "intra" else world - local))
        inp = counts.phases["input"]
        np.testing.assert_allclose(getattr(inp, f"sent_{link}") + getattr(inp, f"recv_{link}"), 2 * flag * peers)
        out = counts.phases["output_backward"]
        assert not (getattr(out, f"sent_{link}") + getattr(out, f"recv_{link}")).any()
        reduce = counts.phases["replica_all_reduce"]
        simulated = getattr(reduce, f"sent_{link}") + getattr(reduce, f"recv_{link}")
        np.testing.assert_allclose(getattr(sheet.traffic, link), simulated)
        expected = 2 * ring if (link == "intra") == (world == local) else 0.0
        np.testing.assert_allclose(simulated, np.full(world, expected))
    # the rank's own ids: B x L rows of D x 4 bytes read, the same in the simulator's forward (plus its bag writes)
    own = batch * ids * dim * 4
    np.testing.assert_allclose(counts.lookup_forward, own + batch * dim * 4)
    assert sheet.lookup.tolist() == pytest.approx(
        [own + 2 * min(batch * world * ids, rows) * dim * 4 + 2 * rows * (dim + 1) * 4] * world)
    assert sheet.memory.tolist() == [rows * dim * 4 + rows * (dim + 1) * 4] * world

def test_dense_activations_are_timed_as_memory_passes() -> None:
    """The dense phase adds ``B x elements x bytes x passes / HBM`` to the FLOPs' time, by hand: 10 samples of 1e8
    elements, 2 bytes, 5 passes at 1,000 GB/s is 10 ms beside 3 x 1e6 x 10 FLOPs at 1e9 FLOP/s (30 ms); without
    ``hbm_gbps`` (the CPU profile) nothing is added."""
    tables = [_table("a", 100, 4)]
    work = StepWorkload(batch_size=10, ids_per_feature={"fa": 1.0}, zipf_exponent=0.0, optimizers={"a": "sgd"},
                        dense_flops_per_sample=1e6, dense_parameters=0, dense_activations_per_sample=1e8)
    counts = count_step(tables, ShardingPlan(1, {"a": TablePlacement("table_wise", [0])}), 1, work)
    assert counts.dense_activation_elements == 1e9
    profile = DeviceProfile("t", lookup_gbps=1.0, intra_node_gbps=1.0, inter_node_gbps=1.0, matmul_tflops=1e-3,
                            latency_us=0.0, step_overhead_ms=0.0)
    assert step_times(counts, profile).phase_ms["dense"].tolist() == pytest.approx([30.0])
    with_hbm = profile.replace(hbm_gbps=1000.0, activation_bytes=2, activation_passes=5.0)
    assert step_times(counts, with_hbm).phase_ms["dense"].tolist() == pytest.approx([40.0])
    assert PROFILES["cpu"].activation_ms(1e9) == 0.0
    assert {p.activation_bytes for n, p in PROFILES.items() if n.endswith("-bf16")} == {2}
    assert {p.activation_bytes for n, p in PROFILES.items() if not n.endswith("-bf16")} == {4}

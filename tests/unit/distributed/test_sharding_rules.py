"""The rule object of each sharding type: its shards, slot kind, combination, pooling, exactness, problems and
cost terms, against the behaviour they replaced (the cost against the former if/elif cost model, kept here as the
reference); the shard layout and the output combination built from them, without a process group."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from recframe.distributed.layout import ShardLayout
from recframe.distributed.output_dist import OutputDist
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner.cost import TableWorkload, option_cost
from recframe.distributed.planner.id_law import IdLaw
from recframe.distributed.planner.topology import Topology
from recframe.distributed.sharding import RULES, rule_for
from recframe.distributed.sharding.base import Combine, PlacementQuery
from recframe.distributed.types import ShardSpec
from recframe.embedding.config import TableConfig
from recframe.vocab import OptimizerName, Pooling, ShardingType


def test_one_rule_per_type_in_the_planner_order() -> None:
    assert list(RULES) == list(ShardingType) and all(rule.kind == kind for kind, rule in RULES.items())
    assert rule_for("row_wise") is RULES[ShardingType.row_wise]
    with pytest.raises(ValueError):
        rule_for("diagonal")


@pytest.mark.parametrize("kind,ranks,sizes,expected", [
    ("table_wise", [2], None, [(2, 0, 10, 0, 8)]),
    ("row_wise", [2, 0], None, [(2, 0, 5, 0, 8), (0, 5, 10, 0, 8)]),
    ("row_wise", [0, 1, 2], None, [(0, 0, 4, 0, 8), (1, 4, 7, 0, 8), (2, 7, 10, 0, 8)]),
    ("row_wise", [1, 0], [1, 9], [(1, 0, 1, 0, 8), (0, 1, 10, 0, 8)]),
    ("table_row_wise", [0, 1], None, [(0, 0, 5, 0, 8), (1, 5, 10, 0, 8)]),
    ("column_wise", [0, 1, 2], None, [(0, 0, 10, 0, 3), (1, 0, 10, 3, 6), (2, 0, 10, 6, 8)]),
    ("column_wise", [1, 0], [2, 6], [(1, 0, 10, 0, 2), (0, 0, 10, 2, 8)]),
    ("data_parallel", [0, 1, 2], None, [(0, 0, 10, 0, 8), (1, 0, 10, 0, 8), (2, 0, 10, 0, 8)]),
])
def test_shards(kind: str, ranks: list[int], sizes: list[int] | None, expected: list[tuple]) -> None:
    shards = TablePlacement(kind, ranks, sizes).shards("t", 10, 8, world_size=3)
    assert [(s.rank, s.row_start, s.row_end, s.col_start, s.col_end) for s in shards] == expected
    assert all(s.table == "t" and s.sharding_type == kind for s in shards)
    assert TablePlacement(kind, ranks, sizes).num_shards() == (1 if kind in ("table_wise", "data_parallel")
                                                               else len(ranks))


def test_slot_kind_combination_and_pooling() -> None:
    rows = {k for k, r in RULES.items() if r.row_split}
    assert rows == {ShardingType.row_wise, ShardingType.table_row_wise, ShardingType.row_wise_routed}
    combine = {k.value: r.combine for k, r in RULES.items()}
    assert combine == {"table_wise": Combine.concat, "row_wise": Combine.add, "column_wise": Combine.concat,
                       "table_row_wise": Combine.add, "row_wise_routed": Combine.pool, "data_parallel": Combine.replica}
    assert [k for k, r in RULES.items() if r.replicated] == [ShardingType.data_parallel]
    routed = RULES[ShardingType.row_wise_routed]  # one row per id: the sample's rank pools, whatever the pooling
    assert {routed.shard_pooling(p) for p in Pooling} == {Pooling.none}
    for kind, rule in RULES.items():  # partial sums pool sums; the mean is taken after adding them
        if rule is routed:
            continue
        assert rule.shard_pooling(Pooling.mean) == (Pooling.sum if kind in rows else Pooling.mean)
        assert rule.shard_pooling(Pooling.sum) == Pooling.sum and rule.shard_pooling(Pooling.none) == Pooling.none


def test_exact_optimizers() -> None:
    """Column shards keep per-row state per shard and LAMB's row norms per shard: not the unsharded math."""
    inexact = {k.value: sorted(o.value for o in OptimizerName if not r.is_exact(o)) for k, r in RULES.items()}
    assert inexact == {"table_wise": [], "row_wise": [], "column_wise": ["lamb", "rowwise_adagrad", "rowwise_adam"],
                       "table_row_wise": [], "row_wise_routed": [], "data_parallel": []}


def test_problems() -> None:
    def problems(placement: TablePlacement, lws: int | None = 2) -> list[str]:
        return ShardingPlan(4, {"t": placement}).group_problems({"t": (10, 8)}, 4, lws)

    assert problems(TablePlacement("table_wise", [0, 1])) == [
        "table 't' (table_wise): table_wise needs exactly one rank, got [0, 1]"]
    assert problems(TablePlacement("data_parallel", [0, 1])) == [
        "table 't' (data_parallel): ranks must be all 4 ranks, got [0, 1]"]
    assert problems(TablePlacement("table_row_wise", [1, 2])) == []  # two nodes: each reduces its own shards
    assert "needs local_world_size" in problems(TablePlacement("table_row_wise", [0, 1]), lws=None)[0]
    assert "only apply to row_wise, column_wise, table_row_wise and row_wise_routed" in problems(
        TablePlacement("table_wise", [0], [10]))[0]
    assert "must give one size per rank and sum to 8" in problems(TablePlacement("column_wise", [0, 1], [4, 5]))[0]
    assert "unknown sharding type" in problems(TablePlacement("diagonal", [0]))[0]
    assert problems(TablePlacement("row_wise", [3, 1], [4, 6])) == []


def _query(**overrides: object) -> PlacementQuery:
    base = dict(rows=1000, dim=64, optimizer=OptimizerName.rowwise_adagrad, pool=[0, 1, 2, 3], by_load=[2, 0, 1, 3],
                world_size=4, nodes=[[0, 1], [2, 3]], explicit=False, fixed=False, data_parallel_max_rows=10_000,
                min_column_shard_dim=32)
    return PlacementQuery(**{**base, **overrides})


def test_candidates() -> None:
    assert RULES[ShardingType.table_wise].candidates(_query()) == ([[0], [1], [2], [3]], [])
    assert RULES[ShardingType.row_wise].candidates(_query()) == ([[0, 1, 2, 3]], [])
    assert RULES[ShardingType.row_wise].candidates(_query(rows=2)) == ([[0, 2]], [])  # the least-loaded ranks
    assert RULES[ShardingType.row_wise].candidates(_query(pool=[1], by_load=[1])) == ([], [])  # auto: two ranks
    assert RULES[ShardingType.column_wise].candidates(_query()) == ([], [])  # auto: rowwise_adagrad is not exact
    assert RULES[ShardingType.column_wise].candidates(_query(optimizer=OptimizerName.adam)) == ([[0, 2]], [])
    assert RULES[ShardingType.column_wise].candidates(_query(explicit=True, fixed=True)) == ([[0, 1, 2, 3]], [])
    assert RULES[ShardingType.table_row_wise].candidates(_query()) == ([[0, 1], [2, 3]], [])
    routed = RULES[ShardingType.row_wise_routed]  # as row_wise: the whole pool, every optimizer
    assert routed.candidates(_query()) == routed.candidates(_query(optimizer=OptimizerName.lamb))
    assert routed.candidates(_query()) == ([[0, 1, 2, 3]], [])
    assert routed.candidates(_query(rows=3)) == ([[0, 1, 2]], [])
    assert routed.candidates(_query(pool=[1], by_load=[1])) == ([], [])
    assert RULES[ShardingType.data_parallel].candidates(_query(rows=100)) == ([[0, 1, 2, 3]], [])
    assert RULES[ShardingType.data_parallel].candidates(_query(explicit=True, pool=[0], by_load=[0])) == (
        [], ["data_parallel needs every rank but the table is pinned to ranks [0]"])


# ---- cost terms: the former cost model (string comparisons and all) is the reference; table_row_wise is now costed as
# the flat all-to-all the runtime runs, data_parallel as the runtime runs it, row_wise_routed is new ---------------
def _reference_cost(t: TableWorkload, placement: TablePlacement, topo: Topology, batch_size: int) -> tuple:
    from recframe.distributed.planner.cost import (
        ID_BYTES,
        LENGTH_BYTES,
        OUTPUT_BYTES,
        Traffic,
        _lookup_bytes,
    )

    world, kind, ranks = topo.world_size, placement.sharding_type, list(placement.ranks)
    big_b, ids_all = batch_size, batch_size * world * t.ids_per_sample
    outputs = t.num_features if t.pooled else t.ids_per_sample
    memory, lookup = [0] * world, [0.0] * world
    traffic = Traffic(topo)
    if kind == "data_parallel":  # as the runtime runs it: own lookups, one ring all-reduce of gradients and counts
        buffer = t.rows * (t.dim + 1) * OUTPUT_BYTES
        for r in ranks:
            memory[r] = t.memory_bytes + buffer
            lookup[r] = _lookup_bytes(t, big_b * t.ids_per_sample, ids_all, t.rows, t.dim) + 2 * buffer
            link = traffic.intra if topo.num_nodes == 1 else traffic.inter
            link[r] += 2 * 2 * (world - 1) / world * buffer
    else:
        for r, (start, end) in zip(ranks, placement.shard_bounds(t.rows, t.dim), strict=True):
            rows, cols = (t.rows, end - start) if kind == "column_wise" else (end - start, t.dim)
            ids = ids_all if kind in ("table_wise", "column_wise") else ids_all * rows / t.rows
            memory[r] = t.shard_bytes(rows, cols)
            lookup[r] = _lookup_bytes(t, ids, ids, rows, cols)
            ids_sent = t.ids_per_sample if kind in ("table_wise", "column_wise") else t.ids_per_sample * rows / t.rows
            if kind == "row_wise_routed":  # each rank's distinct ids of each feature once, one count per feature;
                # one row per distinct id back (and its gradient); the shard looks up every rank's distinct ids
                distinct = t.num_features * IdLaw(0.0).expected_unique(
                    t.rows, [start], [end], big_b * t.ids_per_sample / t.num_features)[0]
                lookup[r] = _lookup_bytes(t, world * distinct, world * distinct, rows, cols)
                traffic.every_rank_with([r], distinct * ID_BYTES + t.num_features * 8)
                traffic.every_rank_with([r], 2 * distinct * cols * OUTPUT_BYTES)
                continue
            traffic.every_rank_with([r], big_b * (ids_sent * ID_BYTES + t.num_features * LENGTH_BYTES))
            if not _node_reduced(kind, ranks, topo):  # table_row_wise on one node or one rank too: flat
                traffic.every_rank_with([r], 2 * big_b * outputs * cols * OUTPUT_BYTES)
        if _node_reduced(kind, ranks, topo):  # a reduce-scatter (fp32) among the ranks, then one sender a destination
            members, values = sorted(ranks), big_b * outputs * t.dim
            slots = -(-world // len(members))
            for r in members:
                traffic.intra[r] += (len(members) - 1) * 2 * slots * values * 2 * OUTPUT_BYTES
            for dest in range(world):
                sender = members[dest % len(members)]
                if sender != dest:
                    link = traffic.intra if topo.node_of(sender) == topo.node_of(dest) else traffic.inter
                    link[sender] += values * 2 * OUTPUT_BYTES
                    link[dest] += values * 2 * OUTPUT_BYTES
        if kind == "row_wise_routed":  # the rows expanded to one per id and pooled, forward and backward
            lookup = [b + 4 * big_b * t.ids_per_sample * t.dim * OUTPUT_BYTES for b in lookup]
    return memory, [b / topo.lookup_bw for b in lookup], traffic.seconds().tolist()


def _node_reduced(kind: ShardingType, ranks: list[int], topo: Topology) -> bool:
    """table_row_wise on several ranks of a world of several nodes: its partial sums are reduced inside the node."""
    return kind == "table_row_wise" and len(set(ranks)) > 1 and topo.num_nodes > 1


def _random_placement(kind: ShardingType, topo: Topology, rows: int, dim: int, rng: random.Random) -> TablePlacement:
    world = topo.world_size
    if kind == ShardingType.table_wise:
        return TablePlacement(kind, [rng.randrange(world)])
    if kind == ShardingType.data_parallel:
        return TablePlacement(kind, list(range(world)))
    if kind == ShardingType.table_row_wise:
        return TablePlacement(kind, topo.node_ranks(rng.randrange(topo.num_nodes)))
    ranks = rng.sample(range(world), rng.randint(1, min(world, dim if kind == ShardingType.column_wise else rows)))
    total = dim if kind == ShardingType.column_wise else rows
    cuts = sorted(rng.sample(range(1, total), len(ranks) - 1))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)] if rng.random() < 0.5 else None
    return TablePlacement(kind, ranks, sizes)


@pytest.mark.parametrize("kind", list(ShardingType))
def test_cost_terms_equal_the_former_cost_model(kind: ShardingType) -> None:
    rng = random.Random(list(ShardingType).index(kind))
    for case in range(40):
        topo = Topology(rng.randint(1, 9), rng.randint(1, 4), 10**9)
        t = TableWorkload(f"t{case}", rows=rng.randint(9, 5000), dim=rng.choice([8, 12, 64]),
                          num_features=rng.randint(1, 3), ids_per_sample=rng.choice([1.0, 2.5, 30.0]),
                          weight_dtype=rng.choice(["fp32", "fp16"]), optimizer=rng.choice(list(OptimizerName)),
                          pooled=rng.random() < 0.8)
        placement, batch = _random_placement(kind, topo, t.rows, t.dim, rng), rng.choice([1, 64, 2048])
        cost = option_cost(t, placement, topo, batch)
        memory, lookup, comm = _reference_cost(t, placement, topo, batch)
        if kind == ShardingType.row_wise_routed or _node_reduced(kind, placement.ranks, topo):  # costed vectorized
            # (the sums in another order)
            assert cost.memory == memory and cost.lookup_s == pytest.approx(lookup, rel=1e-12)
            assert cost.comm_s == pytest.approx(comm, rel=1e-12)
        else:
            assert (cost.memory, cost.lookup_s, cost.comm_s) == (memory, lookup, comm)  # bit for bit


# ---- the layout and the output combination that the engine builds from the rules -------------------------------------
TABLES = [TableConfig(name="a", num_embeddings=10, embedding_dim=4, feature_names=["fa"], pooling="mean"),
          TableConfig(name="b", num_embeddings=6, embedding_dim=2, feature_names=["fb1", "fb2"]),
          TableConfig(name="c", num_embeddings=8, embedding_dim=2, feature_names=["fc"], pooling="mean",
                      id_policy="modulo")]
PLAN = ShardingPlan(2, {"a": TablePlacement("row_wise", [1, 0], [4, 6]), "b": TablePlacement("column_wise", [0, 1]),
                        "c": TablePlacement("data_parallel", [0, 1])})


def test_layout() -> None:
    layout = ShardLayout(TABLES, PLAN, world_size=2)
    assert layout.shards["a"] == [ShardSpec("a", "row_wise", 1, 0, 4, 0, 4), ShardSpec("a", "row_wise", 0, 4, 10, 0, 4)]
    groups = [[(g.replicated, [s.table for s in g.specs]) for g in rank] for rank in layout.groups]
    assert groups == [[(False, ["a", "b"]), (True, ["c"])], [(False, ["a", "b"]), (True, ["c"])]]
    shard_a = layout.groups[0][0].tables[0]  # rows 4..10 of a, pooling sums (the mean comes after the addition)
    assert (shard_a.num_embeddings, shard_a.pooling, shard_a.init_scale) == (6, Pooling.sum, 10 ** -0.5)
    # shards trust the ids the sending rank checked; a replica gets its rank's raw ids and keeps the table's policy
    assert all(t.id_policy == "error" for rank in layout.groups for g in rank if not g.replicated for t in g.tables)
    replica = layout.groups[0][1].tables[0]
    assert replica.id_policy == next(t for t in TABLES if t.name == "c").id_policy
    # replicas (c) have no slot: their ids stay on the rank
    slots = [(s.rank, layout.feature_names[s.feature], s.row_start, s.row_end, s.row_split) for s in layout.slots()]
    assert slots == [(0, "fa", 4, 10, True), (0, "fb1", 0, 6, False), (0, "fb2", 0, 6, False),
                     (1, "fa", 0, 4, True), (1, "fb1", 0, 6, False), (1, "fb2", 0, 6, False)]
    assert layout.model_parallel_features() == [0, 1, 2]
    assert layout.mp_dims() == [4 + 1 + 1, 4 + 1 + 1]
    # columns: fa 0-3, fb1 4-5, fb2 6-7, fc 8-9; rank 0's block, rank 1's block, then rank 1's replica of c
    assert layout.output_columns(1) == [0, 1, 2, 3, 4, 6, 0, 1, 2, 3, 5, 7, 8, 9]
    assert layout.partial_mean_features() == [0]  # fa; fc (data_parallel) pools its whole bags itself


def test_output_combination() -> None:
    out = OutputDist(ShardLayout(TABLES, PLAN, world_size=2), rank=1, group=None, device=torch.device("cpu"),
                     grad_scale=1.0)
    wide = torch.arange(2 * 14, dtype=torch.float32).view(2, 14)  # two samples
    lengths = torch.tensor([4, 0, 1, 1, 1, 1, 2, 2])  # [features, batch]: fa's bags of 4 and 0 ids
    values = out.combine(wide, lengths)
    expected = torch.zeros(2, 10)
    for row in range(2):
        w = wide[row]
        expected[row, 0:4] = (w[0:4] + w[6:10]) / torch.tensor([4.0, 1.0])[row]  # partial sums added, then the mean
        expected[row, 4:8] = torch.stack([w[4], w[10], w[5], w[11]])  # column shards side by side
        expected[row, 8:10] = w[12:14]  # the replica's own rows
    assert torch.equal(values, expected)
    assert not out.permutation and not out.identity


def test_output_of_a_permutation_and_of_the_identity() -> None:
    tables = TABLES[1:2] + [TableConfig(name="d", num_embeddings=3, embedding_dim=3, feature_names=["fd"])]
    swapped = ShardingPlan(2, {"b": TablePlacement("table_wise", [1]), "d": TablePlacement("table_wise", [0])})
    out = OutputDist(ShardLayout(tables, swapped, world_size=2), 0, None, torch.device("cpu"), 1.0)
    assert out.permutation and not out.identity
    wide = torch.arange(7.0).view(1, 7)  # rank 0's block (fd), then rank 1's (fb1, fb2)
    assert out.combine(wide, torch.ones(3, dtype=torch.int64)).tolist() == [[3.0, 4.0, 5.0, 6.0, 0.0, 1.0, 2.0]]
    same = ShardingPlan(2, {"b": TablePlacement("table_wise", [0]), "d": TablePlacement("table_wise", [1])})
    assert OutputDist(ShardLayout(tables, same, world_size=2), 1, None, torch.device("cpu"), 1.0).identity


def test_a_permutation_of_whole_features_moves_blocks_and_equals_the_column_gather() -> None:
    """Table-wise features of one dim swapped between ranks: the block path (features of D columns at a time) gives
    the column-by-column gather's values and gradients."""
    tables = [TableConfig(name=n, num_embeddings=5, embedding_dim=4, feature_names=[f"f{n}"]) for n in "abc"]
    plan = ShardingPlan(2, {"a": TablePlacement("table_wise", [1]), "b": TablePlacement("table_wise", [0]),
                            "c": TablePlacement("table_wise", [1])})
    out = OutputDist(ShardLayout(tables, plan, world_size=2), 0, None, torch.device("cpu"), 1.0)
    assert out.permutation and not out.identity and out._block == 4 and out._block_gather is not None
    wide = torch.randn(3, 12, requires_grad=True)
    values = out.combine(wide, torch.ones(9, dtype=torch.int64))
    reference = wide.index_select(1, out._gather)
    assert torch.equal(values, reference)
    weights = torch.randn(3, 12)
    (grad,) = torch.autograd.grad((values * weights).sum(), wide)
    (expected,) = torch.autograd.grad((reference * weights).sum(), wide)
    assert torch.equal(grad, expected)
    assert out.combine(torch.zeros(0, 12), torch.zeros(0, dtype=torch.int64)).shape == (0, 12)


def test_every_rule_is_used_by_the_layout_counts() -> None:
    """Each row-split shard gets one slot per feature on its rank only; replicated ones none (local lookups)."""
    plan = ShardingPlan(3, {"a": TablePlacement("table_row_wise", [0, 1]), "b": TablePlacement("table_wise", [2]),
                            "c": TablePlacement("data_parallel", [0, 1, 2])})
    counts = Counter(s.rank for s in ShardLayout(TABLES, plan, world_size=3).slots())
    assert counts == {0: 1, 1: 1, 2: 2}


def test_layout_of_routed_shards() -> None:
    """Routed shards: their own local collection (one row per id), routed slots, outside the pooled all-to-all."""
    plan = ShardingPlan(2, {"a": TablePlacement("row_wise_routed", [1, 0], [4, 6]),
                            "b": TablePlacement("table_wise", [0]), "c": TablePlacement("row_wise_routed", [1])})
    layout = ShardLayout(TABLES, plan, world_size=2)
    groups = [[(g.replicated, g.routed, [s.table for s in g.specs]) for g in rank] for rank in layout.groups]
    assert groups == [[(False, False, ["b"]), (False, True, ["a"])], [(False, True, ["a", "c"])]]
    assert {t.pooling for rank in layout.groups for g in rank if g.routed for t in g.tables} == {Pooling.none}
    slots = [(s.rank, layout.feature_names[s.feature], s.row_start, s.row_end, s.routed) for s in layout.slots()]
    assert slots == [(0, "fb1", 0, 6, False), (0, "fb2", 0, 6, False), (0, "fa", 4, 10, True),
                     (1, "fa", 0, 4, True), (1, "fc", 0, 8, True)]
    assert layout.mp_dims() == [4, 0]  # fb1 and fb2 (2 columns each); routed rows travel apart
    assert layout.output_columns(1) == [4, 5, 6, 7] and layout.partial_mean_features() == []

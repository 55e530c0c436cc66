"""Cost model: memory per rank and estimated step time per rank of one table under one placement.

Notation (per step): ``B`` samples per rank, ``W`` ranks, ``G = B * W`` samples in all; a table of
``R`` rows x ``D`` columns with ``w`` bytes per weight, serving ``F`` features with ``L`` ids per
sample over them; a shard holds ``R_s`` rows x ``D_s`` columns on its rank; ``n`` shards.

Memory of a shard: ``R_s * D_s * w`` + optimizer state (fp32: sgd 0, adagrad ``R_s * D_s``,
rowwise_adagrad ``R_s``, adam and lamb ``2 R_s D_s``, rowwise_adam ``R_s D_s + R_s`` values);
a data_parallel replica is the whole table plus its fp32 gradient buffer, ``R * (D + 1) * 4`` (the dense
row gradients and a lookup count a row, all-reduced each step: ``replicas.py``).

Lookup bytes of a shard, from memory at the lookup bandwidth (HBM on GPU, DDR on CPU):
``ids * D_s * w`` forward + ``2 * min(ids, R_s) * (D_s * w + state per row)`` backward (read and
write the updated rows and their state), where ``ids`` = ids the shard serves: ``G L``
(table_wise, column_wise), ``G L / n`` (row_wise, table_row_wise, row_wise_routed: ids spread evenly
over rows); a data_parallel replica looks up its own rank's ``B L`` ids, updates the rows that the
global batch's ``G L`` ids touch, and writes and reads its gradient buffer: ``+ 2 * R * (D + 1) * 4``
(zeroed, then read back after the all-reduce).

Communication bytes of a rank = bytes it sends + bytes it receives, at the intra- or inter-node
bandwidth depending on the peer's node:

- input dist: every rank sends each shard ``B * (L_s * 8 + F * 4)`` (int64 ids, int32 lengths);
  ``L_s = L`` for table_wise and column_wise (every column shard needs every id), ``L / n`` for
  the row splits.
- output dist: every shard exchanges with every rank ``2 * B * P * D_s * 4`` (fp32 pooled
  embeddings forward, their gradients backward; ``P = F`` pooled outputs per sample, or ``L`` for a
  sequence table). For row_wise these are partial sums: a reduce-scatter, run as one flat all-to-all;
  table_row_wise too on one node (or one rank). table_row_wise in a world of several nodes
  (``node_reduced_output``, as ``node_reduce.py`` runs it), per node of its ranks: the ``k >= 2`` ranks it has
  there reduce-scatter their partial sums in fp32 forward and all-gather the gradients backward, each pair of
  them exchanging ``2 * ceil(W / k) * B * P * D * 8`` bytes on the intra-node link, then ``ranks[s % k]`` alone
  exchanges ``B * P * D * 4 * 2`` with rank ``s`` (a node with one of its ranks: that one, flat): between nodes a
  table's pooled rows cross once per destination and node of its ranks, not once per shard. row_wise_routed
  returns one row per distinct id instead: every rank sends each shard the distinct ids of its batch in the
  shard's rows, ``U_s`` of them (``IdLaw.expected_unique`` of ``B * L / F`` draws, per feature; about
  ``B * L_s`` for a large uniform table, at most the shard's rows), exchanges ``2 * U_s * D * 4`` row bytes with
  it, and expands and pools ``B * L`` rows itself (``4 * B * L * D * 4`` bytes read and written at the lookup
  bandwidth, forward and backward); the shard looks up ``W * U_s`` ids; its input dist sends each shard one
  int64 id count per feature instead of the ``B`` bag lengths.
  ``2 * 4`` is fp32 both ways: the table's ``output_wire_bytes`` (``sharding.comms``: bf16 or fp16
  sends 2 bytes a value in that direction).
- data_parallel, as the runtime runs it (``sharding/data_parallel.py``, ``replicas.ReplicaSync``): no ids
  in the input all-to-all, no pooled rows in the output all-to-all; one ring all-reduce of the replica's
  gradient buffer, ``S = R * (D + 1) * 4`` bytes: each rank sends and receives ``2 (W - 1) / W * S``.
  Inside one node that is intra-node traffic; across nodes the ring's inter-node hops set its pace, so it
  is charged to the inter-node link (as the step simulator charges DDP's all-reduce). It does not grow
  with the world (it tends to ``4 S`` a rank), nor do the replica's lookups (``B L`` ids).

Estimated time of a rank = lookup bytes / lookup bandwidth + intra bytes / intra bandwidth + inter
bytes / inter bandwidth (no overlap assumed). It ranks options; it does not predict step times.

Each sharding type's rule (``recframe.distributed.sharding``) adds its own terms to a ``CostSheet``
(``add_cost``) from the sheet's primitives below; ``option_cost`` only asks the rule.

Example:
    >>> from recframe.distributed.plan import TablePlacement
    >>> from recframe.distributed.planner.topology import Topology, format_bytes
    >>> t = TableWorkload("t", rows=1000, dim=16, num_features=1, ids_per_sample=2.0)
    >>> c = option_cost(t, TablePlacement("table_wise", [1]), Topology(2, 2, 10**9), batch_size=10)
    >>> c.memory  # 1000 x 16 x 4 bytes of weights + 1000 x 4 of rowwise Adagrad state
    [0, 68000]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recframe.distributed.plan import TablePlacement
from recframe.distributed.planner.id_law import IdLaw
from recframe.distributed.planner.topology import Topology, format_bytes
from recframe.distributed.planner.traffic import Traffic
from recframe.vocab import OptimizerName, WeightDtype

ID_BYTES = 8  # int64 ids in the input all-to-all
LENGTH_BYTES = 4  # int32 bag lengths
COUNT_BYTES = 8  # int64 id count of a routed slot (row_wise_routed sends it instead of the bag lengths)
OUTPUT_BYTES = 4  # fp32 pooled embeddings and their gradients
STATE_BYTES = 4  # fp32 optimizer state
WEIGHT_BYTES = {WeightDtype.fp32: 4, WeightDtype.fp16: 2, WeightDtype.bf16: 2}
# Optimizer state values per row of a shard with c columns.
STATE_PER_ROW = {OptimizerName.sgd: lambda c: 0, OptimizerName.adagrad: lambda c: c,
                 OptimizerName.rowwise_adagrad: lambda c: 1, OptimizerName.adam: lambda c: 2 * c,
                 OptimizerName.rowwise_adam: lambda c: c + 1, OptimizerName.lamb: lambda c: 2 * c}


@dataclass(frozen=True)
class TableWorkload:
    """What the cost model needs to know about one table.

    Args:
        name: table name.
        rows: rows ``R``.
        dim: columns ``D``.
        num_features: features it serves ``F``.
        ids_per_sample: ids per sample over those features ``L`` (the pooling factor, summed).
        weight_dtype: fp32 | fp16 | bf16.
        optimizer: its sparse optimizer's name (see ``STATE_PER_ROW``).
        pooled: False for a sequence table (one output row per id instead of per feature).
        output_wire_bytes: bytes of one output value on the wire, forward + backward (``sharding.comms``:
            fp32 both ways 8; bf16 or fp16 forward 2 + fp32 backward 4 = 6; half both ways 4).
        id_exponent: the Zipf exponent of its ids over its rows (``id_law.IdLaw``: row 0 the hottest); 0: ids
            spread evenly over the rows. A row block's ids are its share of the law's mass.
    """

    name: str
    rows: int
    dim: int
    num_features: int
    ids_per_sample: float
    weight_dtype: WeightDtype = WeightDtype.fp32
    optimizer: OptimizerName = OptimizerName.rowwise_adagrad
    pooled: bool = True
    output_wire_bytes: int = 2 * OUTPUT_BYTES
    id_exponent: float = 0.0

    def row_share(self, starts: list[int] | np.ndarray, ends: list[int] | np.ndarray) -> np.ndarray:
        """Share of the table's ids in rows ``[starts[i], ends[i])``: rows / ``R`` when uniform, else the id law's."""
        if self.id_exponent == 0:
            return (np.asarray(ends, dtype=float) - np.asarray(starts, dtype=float)) / self.rows
        return IdLaw(self.id_exponent).mass(self.rows, starts, ends)

    def state_row_bytes(self, cols: int) -> int:
        """Optimizer state bytes of one row of a shard with ``cols`` columns."""
        return STATE_PER_ROW[self.optimizer](cols) * STATE_BYTES

    def shard_bytes(self, rows: int, cols: int) -> int:
        """Weights + optimizer state of a ``rows x cols`` shard."""
        return rows * (cols * WEIGHT_BYTES[self.weight_dtype] + self.state_row_bytes(cols))

    @property
    def memory_bytes(self) -> int:
        """The whole table with its optimizer state."""
        return self.shard_bytes(self.rows, self.dim)

    def describe(self) -> str:
        """``'t0' (40,000,000 x 128 fp32 + rowwise_adagrad state: 20.64 GB)``."""
        return (f"{self.name!r} ({self.rows:,} x {self.dim} {self.weight_dtype} + {self.optimizer} state: "
                f"{format_bytes(self.memory_bytes)})")


@dataclass
class OptionCost:
    """Per-rank memory and time of one table under one placement (lists indexed by rank).

    Args:
        placement: the placement costed.
        memory: bytes on each rank.
        lookup_s: estimated lookup seconds per step on each rank.
        comm_s: estimated communication seconds per step on each rank.
        inter_s: the part of ``comm_s`` between nodes (the rest is inside the node; None: not known).
    """

    placement: TablePlacement
    memory: list[int]
    lookup_s: list[float]
    comm_s: list[float]
    inter_s: list[float] | None = None

    @property
    def seconds(self) -> list[float]:
        return [a + b for a, b in zip(self.lookup_s, self.comm_s, strict=True)]


def _lookup_bytes(t: TableWorkload, ids: float, update_ids: float, rows: int, cols: int) -> float:
    row_bytes = cols * WEIGHT_BYTES[t.weight_dtype]
    return ids * row_bytes + 2 * min(update_ids, rows) * (row_bytes + t.state_row_bytes(cols))


class CostSheet:
    """One table's memory, lookup bytes and traffic per rank, filled in by its sharding rule's ``add_cost``.

    Args:
        table: the table's workload.
        topo: the ranks and bandwidths.
        batch_size: samples per rank per step ``B``.

    Example:
        >>> sheet = CostSheet(TableWorkload("t", 1000, 16, 1, 2.0), Topology(2, 2, 10**9), batch_size=10)
        >>> sheet.shard(1, 1000, 16, sheet.ids_all, sheet.ids_all)
        >>> sheet.memory.tolist()
        [0, 68000]
    """

    def __init__(self, table: TableWorkload, topo: Topology, batch_size: int) -> None:
        self.table, self.topo, self.batch_size = table, topo, batch_size
        self.ids_all = batch_size * topo.world_size * table.ids_per_sample  # ids of the global batch ``G L``
        self.outputs = table.num_features if table.pooled else table.ids_per_sample  # output rows per sample
        self.memory = np.zeros(topo.world_size, dtype=np.int64)
        self.lookup = np.zeros(topo.world_size)
        self.traffic = Traffic(topo)

    def shard(self, rank: int, rows: int, cols: int, ids: float, update_ids: float) -> None:
        """A ``rows x cols`` shard on ``rank`` that looks up ``ids`` ids and updates the rows of ``update_ids``."""
        self.memory[rank] = self.table.shard_bytes(rows, cols)
        self.lookup[rank] = _lookup_bytes(self.table, ids, update_ids, rows, cols)

    def replicas(self, ranks: list[int]) -> None:
        """A whole replica on each of ``ranks`` (every rank), as the runtime runs data_parallel: each replica looks up
        its own rank's ids, updates the rows the global batch touched, and the replicas' gradient buffers
        (``R * (D + 1) * 4`` bytes) are summed by one ring all-reduce (module docstring)."""
        t = self.table
        buffer = t.rows * (t.dim + 1) * OUTPUT_BYTES
        ids_own = self.batch_size * t.ids_per_sample
        for rank in ranks:
            self.memory[rank] = t.memory_bytes + buffer
            self.lookup[rank] = _lookup_bytes(t, ids_own, self.ids_all, t.rows, t.dim) + 2 * buffer
        world = self.topo.world_size
        self.traffic.all_reduce(ranks, 2 * 2.0 * (world - 1) / world * buffer)

    def input_dist(self, rank: int, ids_per_sample: float) -> None:
        """Every rank sends the shard on ``rank`` ``ids_per_sample`` ids (and the lengths) per sample."""
        t = self.table
        self.traffic.every_rank_with([rank], self.batch_size * (ids_per_sample * ID_BYTES + t.num_features
                                                                * LENGTH_BYTES))

    def output_all_to_all(self, rank: int, cols: int) -> None:
        """The shard on ``rank`` exchanges ``cols`` columns of output rows (and their gradients) with every rank."""
        self.traffic.every_rank_with([rank], self.batch_size * self.outputs * cols * self.table.output_wire_bytes)

    def node_reduced_output(self, ranks: list[int], groups: list[tuple[int, ...]]) -> None:
        """The pooled output of row blocks on ``ranks`` whose partial sums are reduced inside each node first
        (table_row_wise in a world of several nodes; module docstring, ``node_reduce.py``): each group
        reduce-scatters and one of its ranks sends each destination the group's sum; a rank in no group sends flat.

        Args:
            ranks: the shards' ranks (on one node or several).
            groups: the ranks that reduce among themselves (one node each: ``ShardingRule.reduce_groups``).
        """
        t, world = self.table, self.topo.world_size
        values = self.batch_size * self.outputs * t.dim  # one destination's pooled values
        dests = np.arange(world)
        for group in groups:
            members = np.asarray(group)
            slots = -(-world // len(members))  # destinations a member reduces (padded: the collective's equal chunks)
            self.traffic.within(list(group), 2 * slots * values * 2 * OUTPUT_BYTES)
            self.traffic.pairs(members[dests % len(members)], dests, values * t.output_wire_bytes)
        grouped = {r for group in groups for r in group}
        for rank in sorted(set(ranks) - grouped):  # nothing to reduce with on its node: the flat exchange
            self.output_all_to_all(rank, t.dim)

    def row_shards(self, ranks: list[int], bounds: list[tuple[int, int]], routed: bool = False) -> None:
        """Row blocks ``[start, end)`` on ``ranks[i]``: ``shard``, ``input_dist`` and the output of every shard,
        vectorized (each block's ids: its share of the table's ids, ``TableWorkload.row_share``).

        Args:
            ranks: the shards' ranks.
            bounds: the shards' rows ``(start, end)``.
            routed: each rank sends each shard its distinct ids once, the shard returns one row per id it got
                (row_wise_routed), and every rank expands and pools its samples' rows;
                False: each shard exchanges pooled partial sums with every rank (``output_all_to_all``).
        """
        t = self.table
        rows = [end - start for start, end in bounds]
        starts, ends = [start for start, _ in bounds], [end for _, end in bounds]
        if routed:  # each rank sends a shard each distinct id of a feature once: per feature, the distinct rows of
            # the block among the rank's B x L / F ids
            draws = self.batch_size * t.ids_per_sample / max(t.num_features, 1)
            sent_ids = t.num_features * IdLaw(t.id_exponent).expected_unique(t.rows, starts, ends, draws)
            looked = self.topo.world_size * sent_ids  # a shard looks up what every rank sent it
        else:
            share = t.row_share(starts, ends)
            sent_ids = self.batch_size * t.ids_per_sample * share  # ids each rank sends each shard
            looked = self.ids_all * share
        for rank, n, ids in zip(ranks, rows, looked.tolist(), strict=True):
            self.memory[rank] = t.shard_bytes(n, t.dim)
            self.lookup[rank] = _lookup_bytes(t, ids, ids, n, t.dim)
        if routed:  # one count per slot, not B lengths; one row per distinct id back
            sent = sent_ids * (ID_BYTES + t.dim * t.output_wire_bytes) + t.num_features * COUNT_BYTES
            # the rows expanded to one per id of the batch and pooled, forward; both again in backward
            self.lookup += 4 * self.batch_size * t.ids_per_sample * t.dim * OUTPUT_BYTES
        else:
            sent = sent_ids * ID_BYTES + self.batch_size * t.num_features * LENGTH_BYTES
            sent = sent + self.batch_size * self.outputs * t.dim * t.output_wire_bytes
        self.traffic.shards_with_every_rank(ranks, sent.tolist())


def option_cost(t: TableWorkload, placement: TablePlacement, topo: Topology, batch_size: int) -> OptionCost:
    """Memory and estimated time on every rank of table ``t`` placed as ``placement``.

    Args:
        t: the table's workload.
        placement: a valid placement (ranks inside the world).
        topo: the ranks and bandwidths.
        batch_size: samples per rank per step ``B``.
    """
    return option_arrays(t, placement, topo, batch_size).cost()


@dataclass
class OptionArrays:
    """``OptionCost`` as numpy arrays (what the planner scores candidates with; ``cost()`` makes the lists)."""

    placement: TablePlacement
    memory: np.ndarray
    lookup_s: np.ndarray
    comm_s: np.ndarray
    inter_s: np.ndarray

    @property
    def seconds(self) -> np.ndarray:
        return self.lookup_s + self.comm_s

    def cost(self) -> OptionCost:
        return OptionCost(self.placement, self.memory.tolist(), self.lookup_s.tolist(), self.comm_s.tolist(),
                          self.inter_s.tolist())


def option_arrays(t: TableWorkload, placement: TablePlacement, topo: Topology, batch_size: int) -> OptionArrays:
    """``option_cost`` as arrays: O(world) numpy work, plus O(shards) Python work for the split types."""
    sheet = CostSheet(t, topo, batch_size)
    placement.rule.add_cost(sheet, list(placement.ranks), placement.shard_bounds(t.rows, t.dim))
    return OptionArrays(placement, sheet.memory, sheet.lookup / topo.lookup_bw, sheet.traffic.seconds(),
                        sheet.traffic.inter_seconds())

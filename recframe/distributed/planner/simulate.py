"""Step simulator: bytes and time of one training step on every rank, counted from a plan's actual shard layout.

A check of the planner's cost model (``cost.py``), computed another way:

- what it counts comes from the runtime's own bookkeeping: ``ShardLayout`` (the shards, the input
  all-to-all's slots, the pooled output widths ``mp_dims``), i.e. what ``InputDist``, ``OutputDist``,
  ``PendingPooled`` and ``RoutedOutput`` send, message by message: int64 lengths (a routed slot: one
  count), int64 ids, pooled outputs forward and their gradients backward (a table_row_wise table, in a world of
  several nodes: on each node where it has several ranks, reduce-scattered in fp32 among them first, then sent
  once to each destination by one of them, and the gradients all-gathered back: ``node_reduce.NodeReduceLayout``,
  the runtime's own bookkeeping; phases ``node_reduce_scatter`` and ``node_all_gather``), routed rows both ways, the
  data_parallel replicas' all-reduce (``replicas.ReplicaSync``: one ring all-reduce of every replica's
  fp32 ``[rows, dim]`` gradient and ``[rows]`` lookup counts) and DDP's all-reduce of the dense parameters;
- ids per slot come from the data's id law (``id_law.IdLaw``: Zipf, hot rows first), not an even
  spread (tests/unit/distributed/test_simulate.py checks them against ``InputDist``'s bucketing of real
  synthetic batches); a routed slot gets each distinct id of the sender's batch once (the expected distinct
  rows of its block among the sender's ids), and its shard looks those up;
- a replica of a data_parallel table looks up its own rank's samples and updates the distinct rows of
  the global batch, plus its gradient buffer (zeroed, the local gradients added in, the touched rows read:
  ``R x (D + 1) x 4 x 2 + ids x D x 4``); with ``StepWorkload.data_parallel_all_reduce``, as TorchRec runs it
  (the table's dense gradient joins DDP's all-reduce and every row is updated); a shard's update touches the
  expected distinct rows of the global batch;
- time: each all-to-all takes, per rank, ``max(intra, inter)`` over the link classes of
  ``max(sent, received) / bandwidth`` plus a latency (full-duplex links, NVLink and the network in
  parallel); lookups at the profile's lookup bandwidth; dense work at ``3 x FLOPs`` (forward +
  backward) at the profile's matmul rate, plus its activation elements (``B x`` the model's per sample) as
  memory passes (``step_time``); the step waits for the slowest rank at each collective.

Lookup bytes of a shard (the effective-bandwidth formula of ``scripts/bench_embedding.py``, with
distinct rows for the update): forward ``ids x D_s x w`` (rows read) + ``bags x D_s x 4`` (pooled
output written; routed: ``ids x D x 4``); backward ``bags x D_s x 4`` (gradient read; routed
``ids x D x 4``) + ``distinct x 2 x (D_s x w + state)`` (rows and optimizer state read and written).
A rank with routed tables also expands the rows it gets back to ``B x L`` (one per id) and pools them forward,
and does both again backward: ``2 x B x L x D x 4`` bytes each way.

Example:
    >>> from recframe.distributed.plan import ShardingPlan, TablePlacement
    >>> from recframe.embedding.config import TableConfig
    >>> t = TableConfig(name="t", num_embeddings=100, embedding_dim=4, feature_names=["f"])
    >>> work = StepWorkload(batch_size=10, ids_per_feature={"f": 1.0}, zipf_exponent=0.0,
    ...                     optimizers={"t": "sgd"}, dense_flops_per_sample=0.0, dense_parameters=0)
    >>> counts = count_step([t], ShardingPlan(2, {"t": TablePlacement("table_wise", [1])}), 2, work)
    >>> counts.phases["input"].sent_intra.tolist()  # to rank 1: a flag, 10 lengths, 10 ids; to rank 0: a flag
    [168.0, 8.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recframe.distributed.layout import ShardLayout
from recframe.distributed.node_reduce import NodeReduceLayout
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.planner.cost import STATE_BYTES, STATE_PER_ROW, WEIGHT_BYTES
from recframe.distributed.planner.id_law import IdLaw
from recframe.distributed.sharding import rule_for
from recframe.distributed.sharding.base import Combine
from recframe.embedding.config import TableConfig
from recframe.vocab import OptimizerName

INT64 = 8  # ids, lengths, counts and the weights flag travel as int64
FP32 = 4  # outputs, gradients, dense parameters
DDP_BUCKET_BYTES = 25 * 2**20  # DDP's default gradient bucket: one all-reduce each
PHASES = ("input", "node_reduce_scatter", "output_forward", "routed_forward", "routed_backward", "output_backward",
          "node_all_gather", "replica_all_reduce", "dense_all_reduce")


@dataclass(frozen=True)
class StepWorkload:
    """What one step of every rank does, besides the plan.

    Args:
        batch_size: samples per rank ``B``.
        ids_per_feature: expected ids per sample of each sparse feature.
        zipf_exponent: the id law's exponent (``data.zipf_exponent``; 0 uniform).
        optimizers: each table's sparse optimizer.
        dense_flops_per_sample: the model's dense forward FLOPs per sample (``recframe.models.flops``).
        dense_parameters: dense parameters (all-reduced by DDP in fp32 each step).
        forward_wire_bytes: bytes of a pooled output value or routed row value on the wire (fp32 4, bf16 2).
        backward_wire_bytes: the same for their gradients.
        data_parallel_all_reduce: count data_parallel tables as TorchRec runs them (each rank looks
            up its own samples; the dense gradient of the whole table is all-reduced with the dense parameters and
            every row updated) instead of as recframe's runtime does (its own all-reduce of gradients and counts,
            and only the touched rows updated).
        dense_activations_per_sample: activation elements the model's dense forward writes per sample
            (``recframe.models.flops``); 0: no activation traffic counted.
    """

    batch_size: int
    ids_per_feature: dict[str, float]
    zipf_exponent: float
    optimizers: dict[str, OptimizerName]
    dense_flops_per_sample: float
    dense_parameters: int
    forward_wire_bytes: int = FP32
    backward_wire_bytes: int = FP32
    data_parallel_all_reduce: bool = False
    dense_activations_per_sample: float = 0.0


@dataclass
class LinkBytes:
    """Bytes each rank sends and receives in one phase, by link class (numpy, one entry a rank).

    Args:
        sent_intra: sent to ranks of its node.
        sent_inter: sent to other nodes.
        recv_intra: received from ranks of its node.
        recv_inter: received from other nodes.
        collectives: collectives the phase issues (each pays the profile's latency).
    """

    sent_intra: np.ndarray
    sent_inter: np.ndarray
    recv_intra: np.ndarray
    recv_inter: np.ndarray
    collectives: int = 1

    def __add__(self, other: LinkBytes) -> LinkBytes:
        """Both phases' bytes in one phase (its collectives: the larger count)."""
        return LinkBytes(self.sent_intra + other.sent_intra, self.sent_inter + other.sent_inter,
                         self.recv_intra + other.recv_intra, self.recv_inter + other.recv_inter,
                         max(self.collectives, other.collectives))

    def reversed(self) -> LinkBytes:
        """The same messages sent the other way (what was received is sent)."""
        return LinkBytes(self.recv_intra, self.recv_inter, self.sent_intra, self.sent_inter, self.collectives)


class Links:
    """The ranks' nodes, and the two shapes of all-to-all a step is made of (vectorized over ranks).

    Args:
        world_size: ranks.
        local_world_size: ranks per node (rank ``r`` on node ``r // local_world_size``).

    Example:
        >>> links = Links(4, 2)
        >>> links.to_each(np.array([1.0, 2.0, 3.0, 4.0])).sent_inter.tolist()  # every rank sends v[d] to rank d
        [7.0, 7.0, 3.0, 3.0]
    """

    def __init__(self, world_size: int, local_world_size: int) -> None:
        self.world = world_size
        self.node = np.arange(world_size) // local_world_size
        self.node_size = np.bincount(self.node)[self.node].astype(np.float64)

    def _node_sum(self, v: np.ndarray) -> np.ndarray:
        return np.bincount(self.node, weights=v)[self.node]

    def to_each(self, v: np.ndarray, collectives: int = 1) -> LinkBytes:
        """Every rank sends ``v[d]`` bytes to each other rank ``d`` (the same from every sender).

        Args:
            v: bytes per destination.
            collectives: collectives this takes.
        """
        same = self._node_sum(v)
        return LinkBytes(same - v, v.sum() - same, (self.node_size - 1) * v, (self.world - self.node_size) * v,
                         collectives)

    def one_to_one(self, senders: np.ndarray, dests: np.ndarray, nbytes: float) -> LinkBytes:
        """``senders[i]`` sends ``nbytes`` to ``dests[i]`` (to itself: nothing); no collective of its own.

        Args:
            senders: the sending ranks.
            dests: their destinations.
            nbytes: bytes of each message.

        Example:
            >>> Links(4, 2).one_to_one(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), 5.0).sent_inter.tolist()
            [0.0, 10.0, 0.0, 0.0]
        """
        apart = senders != dests
        ends, peers = senders[apart], dests[apart]
        same = self.node[ends] == self.node[peers]
        out = [np.zeros(self.world) for _ in range(4)]
        for total, ranks in zip(out, (ends[same], ends[~same], peers[same], peers[~same]), strict=True):
            np.add.at(total, ranks, nbytes)
        return LinkBytes(*out, collectives=0)

    def from_each(self, u: np.ndarray, collectives: int = 1) -> LinkBytes:
        """Every rank ``s`` sends ``u[s]`` bytes to each other rank (the same to every receiver).

        Args:
            u: bytes per sender.
            collectives: collectives this takes.
        """
        same = self._node_sum(u)
        return LinkBytes((self.node_size - 1) * u, (self.world - self.node_size) * u, same - u, u.sum() - same,
                         collectives)


@dataclass
class StepCounts:
    """What a step moves on every rank.

    Args:
        world_size: ranks.
        local_world_size: ranks per node.
        lookup_forward: bytes of rows read and outputs written by each rank's forward lookups.
        lookup_backward: bytes of gradients read and rows and state updated by each rank's backward.
        phases: the communication phases (``PHASES``), bytes by link class.
        dense_flops: each rank's dense FLOPs (forward + backward).
        dense_activation_elements: activation elements each rank's dense forward writes (``B x`` per sample).
    """

    world_size: int
    local_world_size: int
    lookup_forward: np.ndarray
    lookup_backward: np.ndarray
    phases: dict[str, LinkBytes]
    dense_flops: float
    dense_activation_elements: float = 0.0


def expected_slot_ids(layout: ShardLayout, work: StepWorkload, law: IdLaw) -> np.ndarray:
    """Expected ids one rank sends to each slot of ``layout.slots()`` in a step (the id law's mass of its rows; a
    routed slot: the distinct ids among them, each sent once).

    Args:
        layout: the shard layout.
        work: the step's workload.
        law: the id law.
    """
    rows = {f: t.num_embeddings for t in layout.tables for f in t.feature_names}
    slots = layout.slots()
    out = np.empty(len(slots))
    for i, s in enumerate(slots):
        feature = layout.feature_names[s.feature]
        draws = work.batch_size * work.ids_per_feature[feature]
        if s.routed:  # each distinct id once (input_dist: RoutedIds)
            out[i] = law.expected_unique(rows[feature], [s.row_start], [s.row_end], draws)[0]
        else:
            out[i] = draws * (law.mass(rows[feature], [s.row_start], [s.row_end])[0] if s.row_split else 1.0)
    return out


def count_step(tables: list[TableConfig], plan: ShardingPlan, local_world_size: int,
               work: StepWorkload) -> StepCounts:
    """Bytes of every rank's lookups and messages in one step of ``plan``.

    Args:
        tables: the model's tables.
        plan: the placement of every table.
        local_world_size: ranks per node.
        work: the step's workload.
    """
    world, batch, law = plan.world_size, work.batch_size, IdLaw(work.zipf_exponent)
    layout = ShardLayout(tables, plan, world)
    links = Links(world, local_world_size)
    slots = layout.slots()
    ids = expected_slot_ids(layout, work, law)
    dims = np.array([layout.feature_dims[s.feature] for s in slots], dtype=np.float64)
    rank = np.array([s.rank for s in slots], dtype=np.int64)
    routed = np.array([s.routed for s in slots], dtype=bool)
    replicas = [t for t in tables if plan.tables[t.name].rule.combine == Combine.replica]
    # replicas have no slot (each rank looks up its own samples): only the weights flag goes to every rank
    per_dest = np.full(world, float(INT64))  # the "sender has weights" flag
    per_dest += np.bincount(rank, weights=ids * INT64 + np.where(routed, INT64, batch * INT64), minlength=world)
    rows_back = np.bincount(rank, weights=np.where(routed, ids * dims, 0.0), minlength=world)
    replica_values = sum(t.num_embeddings * (t.embedding_dim + 1) for t in replicas)  # gradients and counts
    reduced = work.dense_parameters
    if work.data_parallel_all_reduce:  # TorchRec: the tables' dense gradients join DDP's all-reduce
        reduced, replica_values = reduced + sum(t.num_embeddings * t.embedding_dim for t in replicas), 0
    buckets = max(1, -(-reduced * FP32 // DDP_BUCKET_BYTES))
    phases = {
        "input": links.to_each(per_dest, collectives=2),
        **pooled_phases(NodeReduceLayout(layout, local_world_size), links, work),
        "routed_forward": links.from_each(rows_back * work.forward_wire_bytes, collectives=int(routed.any())),
        "routed_backward": links.to_each(rows_back * work.backward_wire_bytes, collectives=int(routed.any())),
        "replica_all_reduce": ring_all_reduce(world, local_world_size, replica_values * FP32,
                                              collectives=int(replica_values > 0 and world > 1)),
        "dense_all_reduce": ring_all_reduce(world, local_world_size, reduced * FP32,
                                            collectives=buckets if world > 1 else 0),
    }
    forward, backward = _lookup_bytes(tables, plan, layout, work, law)
    return StepCounts(world, local_world_size, forward, backward, phases,
                      3.0 * work.dense_flops_per_sample * batch, work.dense_activations_per_sample * batch)


def pooled_phases(reduce: NodeReduceLayout, links: Links, work: StepWorkload) -> dict[str, LinkBytes]:
    """The pooled output's phases as ``OutputDist`` runs them (``node_reduce.py``): each rank's flat columns to every
    rank, and for each node-reduced group a reduce-scatter among its ranks (fp32, padded chunks) before the
    all-to-all, in which ``ranks[s % k]`` alone sends destination ``s`` the group's columns; backward the mirror
    image (the gradients' all-to-all, then an all-gather among the group's ranks).

    Args:
        reduce: the node-reduce bookkeeping of the layout.
        links: the ranks' nodes.
        work: the step's workload.
    """
    world, batch = links.world, work.batch_size
    flat = np.array([len(index) for index in reduce.flat_index], dtype=np.float64)
    forward = links.from_each(batch * flat * work.forward_wire_bytes)
    backward = links.to_each(batch * flat * work.backward_wire_bytes)
    gather = np.zeros(world)
    memberships = np.zeros(world, dtype=np.int64)
    dests = np.arange(world)
    for group in reduce.groups:
        members, values = np.asarray(group.ranks), batch * len(group.columns)
        senders = members[dests % len(members)]
        forward = forward + links.one_to_one(senders, dests, values * work.forward_wire_bytes)
        backward = backward + links.one_to_one(senders, dests, values * work.backward_wire_bytes).reversed()
        gather[members] += (len(members) - 1) * group.slots * values * FP32
        memberships[members] += 1
    zeros, rounds = np.zeros(world), int(memberships.max(initial=0))
    node = LinkBytes(gather, zeros, gather, zeros, rounds)
    return {"node_reduce_scatter": node, "output_forward": forward, "output_backward": backward,
            "node_all_gather": node}


def ring_all_reduce(world: int, local_world_size: int, nbytes: float, collectives: int) -> LinkBytes:
    """A ring all-reduce of ``nbytes``: every rank sends and receives ``2 (W - 1) / W x nbytes``, inside the node
    when the world is one node, else paced by the ring's hops between nodes (counted as inter-node).

    Args:
        world: ranks.
        local_world_size: ranks per node.
        nbytes: the reduced buffer's bytes.
        collectives: collectives it takes.
    """
    ring, zeros = np.full(world, 2.0 * (world - 1) / world * nbytes), np.zeros(world)
    intra, inter = (ring, zeros) if world <= local_world_size else (zeros, ring)
    return LinkBytes(intra, inter, intra, inter, collectives)


def _lookup_bytes(tables: list[TableConfig], plan: ShardingPlan, layout: ShardLayout, work: StepWorkload,
                  law: IdLaw) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward lookup bytes of every rank (see the module docstring)."""
    world, batch = plan.world_size, work.batch_size
    forward, backward = np.zeros(world), np.zeros(world)
    for t in tables:
        rule = rule_for(plan.tables[t.name].sharding_type)
        specs = layout.shards[t.name]
        ids_per_sample = sum(work.ids_per_feature[f] for f in t.feature_names)
        draws = world * batch * ids_per_sample  # the global batch's ids of this table
        ranks = np.array([s.rank for s in specs])
        cols = np.array([s.col_end - s.col_start for s in specs], dtype=np.float64)
        starts, ends = [s.row_start for s in specs], [s.row_end for s in specs]
        share = law.mass(t.num_embeddings, starts, ends) if rule.row_split else np.ones(len(specs))
        distinct = law.expected_unique(t.num_embeddings, starts, ends, draws)
        ids = draws * share
        w = WEIGHT_BYTES[t.weight_dtype]
        state = np.array([STATE_PER_ROW[work.optimizers[t.name]](int(c)) for c in cols]) * STATE_BYTES
        update = distinct * 2 * (cols * w + state)
        bags = world * batch * len(t.feature_names)  # pooled outputs a shard writes: every sample's bag
        if rule.combine == Combine.replica:  # own samples
            ids, bags = ids / world, bags / world
            if work.data_parallel_all_reduce:  # TorchRec: the dense gradient read, every row updated
                update = t.num_embeddings * (cols * FP32 + 2 * (cols * w + state))
            else:  # the buffer zeroed and read back, the local gradients added in, the touched rows updated
                update = (update + distinct * cols * FP32 + 2 * t.num_embeddings * (cols + 1) * FP32
                          + ids * cols * FP32)
        if rule.combine == Combine.pool:  # one row per distinct id of each rank back; the sample's rank expands
            # them to one row per id and pools them (and both again in backward)
            ids = world * sum(law.expected_unique(t.num_embeddings, starts, ends, batch * work.ids_per_feature[f])
                              for f in t.feature_names)
            out = ids * cols * FP32
            forward += 2 * batch * ids_per_sample * t.embedding_dim * FP32
            backward += 2 * batch * ids_per_sample * t.embedding_dim * FP32
        else:
            out = bags * cols * FP32
        np.add.at(forward, ranks, ids * cols * w + out)
        np.add.at(backward, ranks, out + update)
    return forward, backward

"""Traffic: the bytes each rank sends and receives in a step, per collective phase and link class, and their time.

The cost model's communication terms (``cost.CostSheet``) add up here. Links are full duplex (NVLink, the network,
gloo's sockets: a rank sends and receives at once, each way at the configured bandwidth), as the step simulator
(``step_time.py``) times them: a phase (one collective) takes, per link class, the larger of the bytes a rank sends
and receives over that link's bandwidth; the phases and the two link classes add up (no overlap assumed). Phases:

- ``PHASES``, one-way messages: the input all-to-all (ids to the shards), the pooled output forward (shards to
  every rank) and backward (gradients to the shards), routed rows forward and their gradients backward;
- symmetric collectives (a ring all-reduce, the node reduce's reduce-scatter and all-gather): every rank sends
  what it receives, counted once (``sym``).

A rank's time is not the sum of its tables' times: a rank that sends its table's outputs while it receives its
samples' outputs of the other tables pays the larger of the two. So the planner adds tables' ``parts()`` (bytes
over bandwidth, per phase, direction and link; linear) and takes ``duplex_seconds`` of the sum.

Example:
    >>> from recframe.distributed.planner.topology import Topology
    >>> traffic = Traffic(Topology(2, 2, 10**9, intra_node_bw=1.0))
    >>> traffic.star([0], [10.0], "output_forward", to_shards=False)  # rank 0 sends 10 bytes to rank 1
    >>> traffic.star([1], [10.0], "output_forward", to_shards=False)  # and rank 1 to rank 0, at the same time
    >>> traffic.seconds().tolist(), [b.tolist() for b in traffic.exchanged()]  # each way at once: 10 s, not 20
    ([10.0, 10.0], [[20.0, 20.0], [0.0, 0.0]])
"""

from __future__ import annotations

import numpy as np

from recframe.distributed.planner.topology import Topology

PHASES = ("input", "output_forward", "output_backward", "routed_forward", "routed_backward")
ONE_WAY = 2 * len(PHASES)  # rows of one direction in ``parts()``: (phase, link) with link 0 intra, 1 inter
ROWS = 2 * ONE_WAY + 2  # sent rows, received rows, then the symmetric bytes (intra, inter)


def duplex_seconds(parts: np.ndarray, link: int | None = None) -> np.ndarray:
    """Per rank seconds of ``parts`` (``Traffic.parts()`` or a sum of them): per phase and link the larger direction,
    plus the symmetric collectives.

    Args:
        parts: ``[ROWS, world]`` seconds (bytes over the link's bandwidth).
        link: 0 or 1: only the intra- or inter-node link's seconds; None: both.

    Example:
        >>> parts = np.zeros((ROWS, 2))
        >>> parts[0], parts[ONE_WAY] = [3.0, 1.0], [2.0, 4.0]  # input, intra: sent and received
        >>> duplex_seconds(parts).tolist()
        [3.0, 4.0]
    """
    rows = slice(None) if link is None else slice(link, None, 2)
    sent, recv, sym = parts[:ONE_WAY][rows], parts[ONE_WAY:2 * ONE_WAY][rows], parts[2 * ONE_WAY:][rows]
    return np.maximum(sent, recv).sum(axis=0) + sym.sum(axis=0)


class Traffic:
    """Bytes each rank sends and receives per phase and link class (numpy, one entry a rank).

    Every method is vectorized over the ranks (no Python loop over the world), so costing one option is
    O(world) in C, not in Python: what keeps planning 4,096 ranks within seconds.

    Args:
        topo: the ranks and their nodes.

    Example:
        >>> traffic = Traffic(Topology(2, 1, 10**9))
        >>> traffic.star([1], [100.0], "input")  # rank 0 sends rank 1 (another node) 100 bytes
        >>> [b.tolist() for b in traffic.exchanged()]  # sent + received: intra, inter
        [[0.0, 0.0], [100.0, 100.0]]
    """

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        world = topo.world_size
        self.sent = np.zeros((len(PHASES), 2, world))
        self.recv = np.zeros((len(PHASES), 2, world))
        self.sym = np.zeros((2, world))
        self.node = np.arange(world) // topo.local_world_size
        self.node_size = np.bincount(self.node)[self.node]

    def star(self, shards: list[int], nbytes: list[float], phase: str, to_shards: bool = True) -> None:
        """Every rank sends each shard ``shards[i]`` ``nbytes[i]`` (``to_shards``), or each shard sends every rank its
        ``nbytes[i]`` (a shard's rank: nothing to itself), in ``phase``.

        Args:
            shards: the shards' ranks.
            nbytes: bytes of each shard's message with each rank.
            phase: one of ``PHASES``.
            to_shards: the ranks send to the shards (else the shards send to the ranks).

        Example:
            >>> traffic = Traffic(Topology(4, 2, 10**9))
            >>> traffic.star([0], [10.0], "output_forward", to_shards=False)
            >>> traffic.sent[1].tolist(), traffic.recv[1].tolist()  # [intra, inter] per rank
            ([[10.0, 0.0, 0.0, 0.0], [20.0, 0.0, 0.0, 0.0]], [[0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0]])
        """
        topo, world = self.topo, self.topo.world_size
        shard_side, rank_side = (self.recv, self.sent) if to_shards else (self.sent, self.recv)
        p = PHASES.index(phase)
        if len(shards) == 1:  # one shard: its node's ranks are one slice (ranks fill nodes in order)
            s, b = int(shards[0]), float(nbytes[0])
            lo = s - s % topo.local_world_size
            hi = min(lo + topo.local_world_size, world)
            rank_side[p, 1, :lo] += b
            rank_side[p, 1, hi:] += b
            rank_side[p, 0, lo:hi] += b
            rank_side[p, 0, s] -= b
            shard_side[p, 0, s] += b * (hi - lo - 1)
            shard_side[p, 1, s] += b * (world - (hi - lo))
            return
        ranks, sizes = np.asarray(shards, dtype=np.int64), np.asarray(nbytes, dtype=float)
        per_node = np.bincount(self.node[ranks], weights=sizes, minlength=topo.num_nodes)
        own = np.bincount(ranks, weights=sizes, minlength=world)
        same = per_node[self.node]
        rank_side[p, 0] += same - own
        rank_side[p, 1] += sizes.sum() - same
        peers = self.node_size[ranks]
        shard_side[p, 0] += np.bincount(ranks, weights=sizes * (peers - 1), minlength=world)
        shard_side[p, 1] += np.bincount(ranks, weights=sizes * (world - peers), minlength=world)

    def within(self, ranks: list[int], nbytes: float) -> None:
        """Symmetric collectives among ``ranks`` (one node): each sends each other ``nbytes`` and receives as much.

        Example:
            >>> traffic = Traffic(Topology(4, 2, 10**9))
            >>> traffic.within([2, 3], 5.0)
            >>> traffic.sym[0].tolist()
            [0.0, 0.0, 5.0, 5.0]
        """
        self.sym[0, ranks] += (len(ranks) - 1) * nbytes

    def pairs(self, senders: np.ndarray, dests: np.ndarray, nbytes: float, phase: str) -> None:
        """``senders[i]`` sends ``nbytes`` to ``dests[i]`` (to itself: nothing) in ``phase``, vectorized.

        Example:
            >>> traffic = Traffic(Topology(4, 2, 10**9))
            >>> traffic.pairs(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), 5.0, "output_forward")
            >>> traffic.sent[1].tolist(), traffic.recv[1].tolist()
            ([[5.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]], [[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 5.0, 5.0]])
        """
        apart = senders != dests
        ends, peers = senders[apart], dests[apart]
        same = self.node[ends] == self.node[peers]
        p = PHASES.index(phase)
        world = self.topo.world_size
        for link, chosen in ((0, same), (1, ~same)):
            self.sent[p, link] += nbytes * np.bincount(ends[chosen], minlength=world)
            self.recv[p, link] += nbytes * np.bincount(peers[chosen], minlength=world)

    def all_reduce(self, ranks: list[int], nbytes: float) -> None:
        """Each of ``ranks`` sends ``nbytes`` and receives as much in a ring all-reduce over the world: intra-node when
        the world is one node, else inter-node (the ring's hops between nodes set its pace)."""
        self.sym[0 if self.topo.num_nodes == 1 else 1, ranks] += nbytes

    def parts(self) -> np.ndarray:
        """``[ROWS, world]`` seconds: bytes sent, then received, per (phase, link), then the symmetric bytes, each over
        its link's bandwidth (``duplex_seconds`` of a sum of them is the ranks' time)."""
        bw = np.array([self.topo.intra_node_bw, self.topo.inter_node_bw])[:, None]
        world = self.topo.world_size
        return np.concatenate([(self.sent / bw).reshape(ONE_WAY, world), (self.recv / bw).reshape(ONE_WAY, world),
                               self.sym / bw])

    def seconds(self) -> np.ndarray:
        """Per rank seconds of this traffic alone (``duplex_seconds``)."""
        return duplex_seconds(self.parts())

    def inter_seconds(self) -> np.ndarray:
        """The part of ``seconds()`` spent between nodes."""
        return duplex_seconds(self.parts(), link=1)

    def exchanged(self) -> tuple[np.ndarray, np.ndarray]:
        """Bytes each rank sends + receives, intra-node and inter-node (the symmetric collectives both ways)."""
        total = self.sent.sum(axis=0) + self.recv.sum(axis=0) + 2 * self.sym
        return total[0], total[1]

    @property
    def intra(self) -> np.ndarray:
        """Bytes each rank sends + receives inside its node (``exchanged``)."""
        return self.exchanged()[0]

    @property
    def inter(self) -> np.ndarray:
        """Bytes each rank sends + receives between nodes (``exchanged``)."""
        return self.exchanged()[1]

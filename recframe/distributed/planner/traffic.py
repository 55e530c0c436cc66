"""Traffic: the bytes each rank sends + receives in a step, split by whether the peer is on its node.

The cost model's communication terms (``cost.CostSheet``) add up here; ``seconds()`` divides them by the
intra- and inter-node bandwidths of the topology.

Example:
    >>> from recframe.distributed.planner.topology import Topology
    >>> traffic = Traffic(Topology(4, 2, 10**9))
    >>> traffic.every_rank_with([0], 10.0)
    >>> traffic.intra.tolist(), traffic.inter.tolist()
    ([10.0, 10.0, 0.0, 0.0], [20.0, 0.0, 10.0, 10.0])
"""

from __future__ import annotations

import numpy as np

from recframe.distributed.planner.topology import Topology


class Traffic:
    """Bytes each rank sends + receives, split by whether the peer is on the same node (numpy, one entry a rank).

    Every method is vectorized over the ranks (no Python loop over the world), so costing one option is
    O(world) in C, not in Python: what keeps planning 4,096 ranks within seconds.

    Args:
        topo: the ranks and their nodes.

    Example:
        >>> traffic = Traffic(Topology(2, 1, 10**9))
        >>> traffic.every_rank_with([1], 100.0)  # ranks 0 and 1 exchange 100 bytes; one node a rank
        >>> traffic.intra.tolist(), traffic.inter.tolist()
        ([0.0, 0.0], [100.0, 100.0])
    """

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        world = topo.world_size
        self.intra = np.zeros(world)
        self.inter = np.zeros(world)
        self.node = np.arange(world) // topo.local_world_size
        self.node_size = np.bincount(self.node)[self.node]

    def every_rank_with(self, shards: list[int], nbytes: float) -> None:
        """Every rank exchanges ``nbytes`` with each shard rank (closed form, vectorized over ranks)."""
        topo = self.topo
        per_node = np.bincount(self.node[shards], minlength=topo.num_nodes)
        same = per_node[self.node]
        own = np.zeros(topo.world_size, dtype=np.int64)
        own[shards] = 1
        self.intra += nbytes * (same - own)
        self.inter += nbytes * (len(shards) - same)
        for s in shards:
            self.intra[s] += nbytes * (self.node_size[s] - 1)
            self.inter[s] += nbytes * (topo.world_size - self.node_size[s])

    def shards_with_every_rank(self, shards: list[int], nbytes: list[float]) -> None:
        """Shard ``shards[i]`` exchanges ``nbytes[i]`` with every rank: ``every_rank_with([s], b)`` for every
        shard at once (equal up to rounding: the sums are taken in another order)."""
        topo, world = self.topo, self.topo.world_size
        if len(shards) <= 2:
            for s, b in zip(shards, nbytes, strict=True):
                self.every_rank_with([s], b)
            return
        ranks, sizes = np.asarray(shards), np.asarray(nbytes, dtype=float)
        per_node = np.bincount(self.node[ranks], weights=sizes, minlength=topo.num_nodes)
        own = np.zeros(world)
        own[ranks] = sizes
        same = per_node[self.node]
        self.intra += same - own
        self.inter += sizes.sum() - same
        self.intra[ranks] += sizes * (self.node_size[ranks] - 1)
        self.inter[ranks] += sizes * (world - self.node_size[ranks])

    def within(self, ranks: list[int], nbytes: float) -> None:
        """Each pair of ``ranks`` (one node) exchanges ``nbytes``: ``(len(ranks) - 1) * nbytes`` a rank, intra-node.

        Example:
            >>> traffic = Traffic(Topology(4, 2, 10**9))
            >>> traffic.within([2, 3], 5.0)
            >>> traffic.intra.tolist()
            [0.0, 0.0, 5.0, 5.0]
        """
        self.intra[ranks] += (len(ranks) - 1) * nbytes

    def pairs(self, senders: np.ndarray, dests: np.ndarray, nbytes: float) -> None:
        """``senders[i]`` exchanges ``nbytes`` with ``dests[i]`` (a rank with itself: nothing), vectorized.

        Example:
            >>> traffic = Traffic(Topology(4, 2, 10**9))
            >>> traffic.pairs(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), 5.0)
            >>> traffic.intra.tolist(), traffic.inter.tolist()
            ([5.0, 5.0, 0.0, 0.0], [0.0, 10.0, 5.0, 5.0])
        """
        apart = senders != dests
        ends, peers = senders[apart], dests[apart]
        same = self.node[ends] == self.node[peers]
        for side in (ends, peers):
            np.add.at(self.intra, side[same], nbytes)
            np.add.at(self.inter, side[~same], nbytes)

    def all_reduce(self, ranks: list[int], nbytes: float) -> None:
        """Each of ``ranks`` sends + receives ``nbytes`` in a ring all-reduce over the world: intra-node traffic when
        the world is one node, else inter-node (the ring's hops between nodes set its pace)."""
        target = self.intra if self.topo.num_nodes == 1 else self.inter
        target[ranks] += nbytes

    def seconds(self) -> np.ndarray:
        topo = self.topo
        return self.intra / topo.intra_node_bw + self.inter / topo.inter_node_bw

    def inter_seconds(self) -> np.ndarray:
        """The part of ``seconds()`` spent between nodes."""
        return self.inter / self.topo.inter_node_bw

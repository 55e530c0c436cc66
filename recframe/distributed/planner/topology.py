"""Topology: the ranks, their memory and the bandwidths the cost model divides bytes by.

Ranks ``0..world_size-1`` fill nodes of ``local_world_size`` ranks in order (rank ``r`` is on node
``r // local_world_size``; the last node may be partial). Memory per rank is configured
(``sharding.topology.memory_per_rank_gb``) or detected: the total memory of the GPU when the
trainer runs on CUDA, else the host's RAM divided by the ranks of a node. Bandwidths are in
bytes per second and are estimates meant to compare options, not to predict step times.

Example:
    >>> topo = Topology(world_size=16, local_world_size=8, memory_per_rank_bytes=80 * 10**9)
    >>> topo.node_of(9), topo.num_nodes, topo.usable_memory_bytes / 1e9
    (1, 2, 72.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from recframe.config.sharding import LINK_GBPS, TopologyConfig
from recframe.errors import RecframeError
from recframe.vocab import TopologyDevice

GB = 10**9
_DEFAULT = TopologyConfig  # the defaults below are the config's (one source)


def format_bytes(n: float) -> str:
    """``20.64 GB``, ``3.40 MB``: decimal units, as the plan and its errors print sizes."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


class PlanningError(RecframeError):
    """A plan that cannot work (a table that fits nowhere, a constraint that cannot be met); a readable message."""


@dataclass(frozen=True)
class Topology:
    """The ranks a plan is made for.

    Args:
        world_size: number of ranks.
        local_world_size: ranks per node.
        memory_per_rank_bytes: memory of each rank (GPU memory, or host memory per rank on CPU).
        reserved_fraction: share of each rank's memory kept for everything but tables (dense model,
            activations, communication buffers); tables get the rest.
        intra_node_bw: all-to-all bytes/s per rank between ranks of one node.
        inter_node_bw: all-to-all bytes/s per rank between nodes.
        hbm_bw: bytes/s of embedding-row gathers from GPU memory.
        ddr_bw: bytes/s of embedding-row gathers from host memory.
        device: ``cuda`` (lookups at ``hbm_bw``) or ``cpu`` (lookups at ``ddr_bw``).
    """

    world_size: int
    local_world_size: int
    memory_per_rank_bytes: int
    reserved_fraction: float = _DEFAULT.reserved_fraction
    intra_node_bw: float = LINK_GBPS["cuda"][0] * GB
    inter_node_bw: float = LINK_GBPS["cuda"][1] * GB
    hbm_bw: float = _DEFAULT.hbm_bw_gbps * GB
    ddr_bw: float = _DEFAULT.ddr_bw_gbps * GB
    device: TopologyDevice = TopologyDevice.cuda

    def __post_init__(self) -> None:
        if self.world_size < 1 or self.local_world_size < 1:
            raise PlanningError(f"world_size ({self.world_size}) and local_world_size ({self.local_world_size}) "
                                "must be >= 1")

    @property
    def num_nodes(self) -> int:
        return -(-self.world_size // self.local_world_size)

    @property
    def usable_memory_bytes(self) -> int:
        """Memory per rank the tables may use."""
        return int(self.memory_per_rank_bytes * (1.0 - self.reserved_fraction))

    @property
    def lookup_bw(self) -> float:
        """Bytes/s of the memory the tables live in."""
        return self.hbm_bw if self.device == TopologyDevice.cuda else self.ddr_bw

    def node_of(self, rank: int) -> int:
        return rank // self.local_world_size

    def node_ranks(self, node: int) -> list[int]:
        """The ranks of one node, in order."""
        start = node * self.local_world_size
        return list(range(start, min(start + self.local_world_size, self.world_size)))

    def describe(self) -> str:
        """One line: ranks, nodes, memory."""
        return (f"{self.world_size} rank{'s' * (self.world_size > 1)} ({self.num_nodes} node"
                f"{'s' * (self.num_nodes > 1)} x {min(self.local_world_size, self.world_size)}), "
                f"{self.memory_per_rank_bytes / GB:.1f} GB per rank ({self.usable_memory_bytes / GB:.1f} GB for "
                f"tables, {self.reserved_fraction:.0%} reserved), lookups on {self.device}")


def host_memory_bytes() -> int:
    """Physical memory of this host."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect_device_and_memory(accelerator: str, local_world_size: int) -> tuple[TopologyDevice, int | None]:
    """The device the tables will live on and its memory per rank, as far as this machine can tell.

    Args:
        accelerator: ``trainer.accelerator`` or ``sharding.topology.device`` (cpu | gpu | cuda | auto).
        local_world_size: ranks per node (they share the host's memory on CPU).

    Returns:
        ``("cuda", total GPU memory)``, ``("cpu", host memory / local ranks)``, or ``("cuda", None)``
        when the run is for GPUs but this machine has none to measure.
    """
    import torch

    wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not wants_gpu:
        return TopologyDevice.cpu, host_memory_bytes() // local_world_size
    if torch.cuda.is_available():
        return TopologyDevice.cuda, int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return TopologyDevice.cuda, None

"""Device profiles and the step simulator's time model: a ``StepCounts`` (``simulate.py``) to milliseconds per rank.

Per rank and phase: an all-to-all takes ``max(intra, inter)`` of ``max(sent, received) / bandwidth`` per link
class (full-duplex links; NVLink and the network work at once) plus ``latency x collectives`` (the node
reduce's reduce-scatter and all-gather, inside the node, are timed the same way); lookups
take their bytes at ``lookup_gbps``; dense work its FLOPs at ``matmul_tflops`` plus, where ``hbm_gbps > 0``, its
activation elements x ``activation_bytes`` x ``activation_passes`` at ``hbm_gbps`` (the memory-bound elementwise
passes over the activations: bias, ReLU and their gradients, casts, the cross layers' products, concatenations,
which do not speed up with a faster matmul rate). The step is
synchronous: each phase lasts as long as its slowest rank, and the step is the sum of the phases plus
``step_overhead_ms`` (launches and framework work that no byte or FLOP count sees).

Profiles (``PROFILES``; every rate is per rank, GB = 1e9 bytes):

- ``h100``/``h200``: lookups at the effective bandwidth of recframe's triton kernel on MLPerf's tables
  capped at 4M rows (BENCHMARKS.md: 1,974 GB/s on an H100, 2,305 on an H200); NVLink all-to-all 300
  GB/s and 40 GB/s between nodes (a 400 Gb/s NIC per GPU) each way, 30 us a collective; matmuls at ~75%
  of the dense peak: fp32 50, tf32 370, bf16 740 TFLOP/s (``-tf32``, ``-bf16`` profiles); the per-step
  overhead is fitted on one measured step (S fp32 on an H200: 2.26 ms measured, 0.16 ms of bytes and FLOPs);
  HBM at 3,350 GB/s (H100 SXM) and 4,800 (H200), activations of 4 bytes (fp32, tf32) or 2 (``-bf16``:
  bf16-mixed's activations); ``activation_passes`` (10.4: each activation element read or written 10.4 times a
  step, forward and backward) is fitted on one measured step, MLPerf4M bf16-mixed on an H100 (5.95 ms measured
  after the bench's wait fix, 4.45 ms simulated without the term; 241M activation elements a step, 0.144 ms a
  pass), and checked on the other H100 rows (BENCHMARKS.md, "Activation traffic in the step simulator").
- ``cpu``: the 2-core development VM, measured 2026-12-07 (``scripts/measure_cpu_profile.py``,
  ``scripts/bench_embedding.py --devices cpu --shapes S --optimizer rowwise_adagrad --backend fbgemm``):
  sgemm 175 GFLOP/s, fbgemm lookups 2.5 GB/s, gloo all-to-all 0.79 GB/s and 0.32 ms between two local
  processes; the node's ranks share the host's 2 cores (its compute rates are divided among them) and, with
  more ranks than cores, compute at ``1 / 1.42`` of that even share (``oversubscribed_slowdown``, below); no
  fitted overhead; no activation term (``hbm_gbps`` 0: the measured sgemm rate is what the rows were checked on).

Oversubscribed hosts (``shares_host`` and more ranks on a node than ``cores``): the ranks' compute (lookups and
dense) is ``oversubscribed_slowdown`` times longer than an even share of the host's rates. An even share is what
the same ranks get when they do not wait for each other (three independent 1-thread ``recframe bench`` processes
on the 2 cores: 159-165 ms a step, 1.5 x the 110 ms of one alone); ranks that meet at a collective every few
milliseconds lose more: a rank's compute, and its gloo threads' progress, wait for a time slice of a core that
the other ranks hold, and the collective waits for the slowest of them. The factor is fitted on 4 processes of
``dlrm`` on the 2-core VM (2026-12-07 23:08: 343 and 386 ms measured, 234 ms of even-share compute and 32 ms of
communication simulated) and checked on 3 (BENCHMARKS.md, "Oversubscribed CPU ranks"). Below the core count
(1 and 2 processes on 2 cores) nothing changes.

Example:
    >>> from recframe.distributed.planner.simulate import LinkBytes
    >>> import numpy as np
    >>> one = np.array([1e9, 0.0])
    >>> counts = StepCounts(2, 2, np.zeros(2), np.zeros(2), {"input": LinkBytes(one, 0 * one, one, 0 * one)}, 0.0)
    >>> times = step_times(counts, DeviceProfile("x", 1.0, 100.0, 10.0, 1.0, 0.0, 0.0))
    >>> times.rank_ms.tolist(), times.step_ms  # 1 GB sent and received at 100 GB/s: 10 ms on rank 0
    ([10.0, 0.0], 10.0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from recframe.config.sharding import LINK_GBPS, TopologyConfig
from recframe.distributed.planner.simulate import PHASES, StepCounts

GB = 1e9


@dataclass(frozen=True)
class DeviceProfile:
    """The rates of one kind of rank (see the module docstring for where each default comes from).

    Args:
        name: the profile's name.
        lookup_gbps: GB/s of embedding rows read and written (effective, as ``scripts/bench_embedding.py`` counts).
        intra_node_gbps: all-to-all GB/s each way per rank inside a node.
        inter_node_gbps: all-to-all GB/s each way per rank between nodes.
        matmul_tflops: dense TFLOP/s of the model's products.
        latency_us: microseconds per collective.
        step_overhead_ms: fixed milliseconds per step (launches, framework).
        shares_host: the ranks of a node share one host's cores (CPU processes): compute rates are divided among
            them.
        cores: the host's cores (``shares_host``); 0: not known, never oversubscribed.
        oversubscribed_slowdown: with more ranks on a node than ``cores``, their compute takes this many times
            an even share of the host's rates (module docstring: time slicing among ranks that meet at every
            collective); 1.0: an even share.
        hbm_gbps: memory GB/s of a rank's dense elementwise passes; 0: no activation term.
        activation_bytes: bytes of an activation element (4 fp32 and tf32, 2 bf16-mixed).
        activation_passes: times each activation element is read or written in a step (forward and backward).
    """

    name: str
    lookup_gbps: float
    intra_node_gbps: float
    inter_node_gbps: float
    matmul_tflops: float
    latency_us: float
    step_overhead_ms: float
    shares_host: bool = False
    cores: int = 0
    oversubscribed_slowdown: float = 1.0
    hbm_gbps: float = 0.0
    activation_bytes: int = 4
    activation_passes: float = 0.0

    def activation_ms(self, elements: float, share: float = 1.0) -> float:
        """Milliseconds of the activation passes over ``elements`` (0 without ``hbm_gbps``).

        Args:
            elements: activation elements a step's dense forward writes.
            share: by how much the rank's rates are divided (``compute_share``).

        Example:
            >>> # 1e9 elements x 2 bytes x 10 passes at 2,000 GB/s: 10 ms
            >>> PROFILES["h100-bf16"].replace(hbm_gbps=2000.0, activation_passes=10.0).activation_ms(1e9)
            10.0
        """
        if self.hbm_gbps <= 0:
            return 0.0
        return elements * self.activation_bytes * self.activation_passes / (self.hbm_gbps * GB / share) * 1e3

    def compute_share(self, local_world_size: int, world_size: int) -> float:
        """By how much a rank's compute rates are divided: the ranks sharing its host (``shares_host``), times
        ``oversubscribed_slowdown`` when they outnumber the host's ``cores``; 1 for ranks with their own device.

        Args:
            local_world_size: ranks per node.
            world_size: ranks.

        Example:
            >>> cpu = PROFILES["cpu"]
            >>> cpu.compute_share(2, 2), cpu.compute_share(3, 3), PROFILES["h100"].compute_share(8, 64)
            (2, 4.26, 1)
        """
        if not self.shares_host:
            return 1
        share = min(local_world_size, world_size)
        return share * self.oversubscribed_slowdown if 0 < self.cores < share else share

    def replace(self, **changes: float | str | bool) -> DeviceProfile:
        """A copy with some fields changed (command-line overrides).

        Args:
            changes: field name -> value.
        """
        return dataclasses.replace(self, **changes)


ACTIVATION_PASSES = 10.4  # fitted on MLPerf4M bf16-mixed on an H100 (module docstring)
_H100 = DeviceProfile("h100", lookup_gbps=1974.0, intra_node_gbps=300.0, inter_node_gbps=40.0, matmul_tflops=50.0,
                      latency_us=30.0, step_overhead_ms=2.10, hbm_gbps=3350.0, activation_passes=ACTIVATION_PASSES)
_H200 = _H100.replace(name="h200", lookup_gbps=2305.0, hbm_gbps=4800.0)
_BF16 = {"matmul_tflops": 740.0, "activation_bytes": 2}
PROFILES = {p.name: p for p in (
    _H100, _H100.replace(name="h100-tf32", matmul_tflops=370.0), _H100.replace(name="h100-bf16", **_BF16),
    _H200, _H200.replace(name="h200-tf32", matmul_tflops=370.0), _H200.replace(name="h200-bf16", **_BF16),
    # the planner's CPU defaults (one source of the measured numbers); its links count sent + received, ours one way
    DeviceProfile("cpu", lookup_gbps=TopologyConfig.ddr_bw_gbps, intra_node_gbps=LINK_GBPS["cpu"][0] / 2,
                  inter_node_gbps=LINK_GBPS["cpu"][1] / 2, matmul_tflops=0.175, latency_us=321.0,
                  step_overhead_ms=0.0, shares_host=True, cores=2, oversubscribed_slowdown=1.42),
)}


@dataclass
class StepTimes:
    """Milliseconds of one step.

    Args:
        phase_ms: per phase (``lookup_forward``, ``lookup_backward``, ``dense`` and ``simulate.PHASES``), per rank.
        rank_ms: each rank's own total (its phases, the overhead included; no waiting).
        step_ms: the synchronous step: the slowest rank of every phase, summed, plus the overhead.
        overhead_ms: the profile's fixed per-step milliseconds.
    """

    phase_ms: dict[str, np.ndarray]
    rank_ms: np.ndarray
    step_ms: float
    overhead_ms: float

    @property
    def max_ms(self) -> float:
        return float(self.rank_ms.max())

    @property
    def mean_ms(self) -> float:
        return float(self.rank_ms.mean())

    def comm_ms(self, link: str) -> np.ndarray:
        """Per rank milliseconds of all-to-all phases on one link class (``intra`` or ``inter``), latency excluded.

        Args:
            link: ``intra`` or ``inter``.
        """
        return sum((self.phase_ms[f"{p}_{link}"] for p in PHASES), np.zeros_like(self.rank_ms))


def step_times(counts: StepCounts, profile: DeviceProfile) -> StepTimes:
    """The time model (module docstring) applied to ``counts``.

    Args:
        counts: the step's bytes and FLOPs per rank.
        profile: the ranks' rates.
    """
    share = profile.compute_share(counts.local_world_size, counts.world_size)
    lookup_rate = profile.lookup_gbps * GB / share
    world = counts.world_size
    phase_ms: dict[str, np.ndarray] = {
        "lookup_forward": counts.lookup_forward / lookup_rate * 1e3,
        "lookup_backward": counts.lookup_backward / lookup_rate * 1e3,
        "dense": np.full(world, counts.dense_flops / (profile.matmul_tflops * 1e12 / share) * 1e3
                         + profile.activation_ms(counts.dense_activation_elements, share)),
    }
    for name, link in counts.phases.items():
        intra = np.maximum(link.sent_intra, link.recv_intra) / (profile.intra_node_gbps * GB) * 1e3
        inter = np.maximum(link.sent_inter, link.recv_inter) / (profile.inter_node_gbps * GB) * 1e3
        latency = profile.latency_us * 1e-3 * link.collectives if world > 1 else 0.0
        phase_ms[name] = np.maximum(intra, inter) + latency
        phase_ms[f"{name}_intra"], phase_ms[f"{name}_inter"] = intra, inter
    timed = ["lookup_forward", "lookup_backward", "dense", *counts.phases]
    rank_ms = sum((phase_ms[p] for p in timed), np.zeros(world)) + profile.step_overhead_ms
    step_ms = sum(float(phase_ms[p].max()) for p in timed) + profile.step_overhead_ms
    return StepTimes(phase_ms, rank_ms, step_ms, profile.step_overhead_ms)

"""Schema of the ``sharding`` config group: how the tables are spread over ranks.

``type: auto`` runs the cost-based planner (``recframe.distributed.planner``); a sharding type
(``table_wise`` ...) gives every table that type; ``manual`` takes the plan in ``tables``.
Constraints narrow what the planner may choose per table. The topology says how much memory a
rank has and how fast lookups and communication are; every figure is an estimate used only to
compare options.

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(ShardingConfig)
    >>> cfg.type, cfg.topology.reserved_fraction
    ('auto', 0.1)
    >>> OmegaConf.merge(cfg, {"type": "row_wise"}).type is ShardingMode.row_wise
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from recframe.vocab import Backend, CommsDtype, RowBlocks, ShardingMode, ShardingType, TopologyDevice


@dataclass
class TableConstraintConfig:
    """What the planner may do with one table."""

    sharding_types: list[ShardingType] = field(default_factory=list)  # allowed sharding types (empty: any)
    ranks: list[int] | None = None  # pinned ranks: the table's shards go only to these ranks (None: any rank)
    ids_per_sample: float | None = None  # ids per sample over the table's features; None: data.ids_per_feature, else 1


@dataclass
class ManualPlacementConfig:
    """One table's placement in a manual plan (recframe.distributed.plan.TablePlacement)."""

    sharding_type: ShardingType = MISSING  # a recframe.vocab.ShardingType (table_wise, row_wise, row_wise_routed, ...)
    ranks: list[int] = MISSING  # the ranks holding the shards, in shard order (data_parallel: the replicas)
    shard_sizes: list[int] | None = None  # rows (row splits) or columns (column_wise) per shard; None: even
    compute_kernel: Backend = Backend.auto  # kernel backend of the local shards: auto | fbgemm | triton | torch


# Default (intra-node, inter-node) all-to-all GB/s per rank by where the tables live, of bytes sent + received (the
# cost model's count): GPUs with NVLink and a 200 Gb/s NIC each; CPU processes exchanging through gloo, 0.79 GB/s
# sent and as much received at once between two processes of the development VM (scripts/measure_cpu_profile.py,
# the step simulator's ``cpu`` profile), assumed the same between hosts.
LINK_GBPS = {"cuda": (150.0, 25.0), "cpu": (1.58, 1.58)}


@dataclass
class TopologyConfig:
    """Ranks, memory and bandwidths the planner assumes (GB = 1e9 bytes)."""

    device: TopologyDevice = TopologyDevice.auto  # where tables live (memory, lookup bandwidth): auto | cuda | cpu
    memory_per_rank_gb: float | None = None  # memory per rank; None: detected (GPU total, else host RAM / local ranks)
    reserved_fraction: float = 0.1  # share of each rank's memory kept for dense model, activations and buffers
    local_world_size: int | None = None  # ranks per node; None: trainer.devices, or world_size when that is set
    # all-to-all GB/s per rank inside a node; None: LINK_GBPS of the device (GPU: NVLink-class, ~1/3 of H100 peak;
    # CPU: gloo between the processes of a host, measured on the 2-core development VM)
    intra_node_bw_gbps: float | None = None
    inter_node_bw_gbps: float | None = None  # all-to-all GB/s per rank between nodes; None: LINK_GBPS of the device
    hbm_bw_gbps: float = 1000.0  # GB/s of random-row gathers from GPU memory (~1/3 of H100 HBM3 peak)
    # GB/s of lookups + fused update from host memory (CPU training): 2.5 measured with fbgemm on the development VM
    # (scripts/bench_embedding.py; the step simulator's ``cpu`` profile)
    ddr_bw_gbps: float = 2.5


@dataclass
class CommsConfig:
    """Wire formats of the pooled all-to-alls (``recframe.distributed.qcomms``)."""

    forward_dtype: CommsDtype = CommsDtype.fp32  # the pooled embeddings (and row-wise partial sums): fp32 | bf16 | fp16
    backward_dtype: CommsDtype = CommsDtype.fp32  # their gradients: fp32 | bf16 | fp16 (fp16 scaled per sender)


@dataclass
class ShardingConfig:
    """How embedding tables are sharded (configs/sharding/)."""

    type: ShardingMode = ShardingMode.auto  # auto (planner) | a ShardingType for every table | manual (``tables``)
    constraints: dict[str, TableConstraintConfig] = field(default_factory=dict)  # table name -> constraint
    tables: dict[str, ManualPlacementConfig] = field(default_factory=dict)  # type=manual: table name -> placement
    topology: TopologyConfig = field(default_factory=TopologyConfig)  # memory and bandwidths per rank
    data_parallel_max_rows: int = 10_000  # auto: only tables with at most this many rows may be replicated
    min_column_shard_dim: int = 32  # auto: column_wise shards have at least this many columns
    comms: CommsConfig = field(default_factory=CommsConfig)  # quantized communication (default exact fp32)
    # auto: row blocks of row splits: even (equal rows; ids costed as spread evenly) | id_mass (equal shares of the
    # ids under the synthetic data's id law, data.zipf_exponent, each block at least one row; the cost model then
    # counts each block's ids by that law) | auto (id_mass where the data declares a skewed law, else even: real
    # data's hashed ids). Only the plan's shard_sizes change: checkpoints hold row blocks either way
    row_blocks: RowBlocks = RowBlocks.auto

"""``make_plan``: a run config (and world size) to a checked ShardingPlan and its report.

The planner's config adapter: recframe.distributed's planner knows tables, workloads and a
topology; this module reads them off a run config (the application layer's job).

``sharding.type`` picks how: ``auto`` runs the planner, a sharding type gives every table that
type (ranks chosen by the planner's cost model), ``manual`` takes ``sharding.tables`` and checks
it. Every way ends with every table placed and every rank within memory, or a PlanningError.

Example:
    >>> from recframe.config.compose import compose_config
    >>> cfg = compose_config(["+experiment=dlrm", "sharding=row_wise", "sharding.topology.memory_per_rank_gb=1"])
    >>> plan, report = make_plan(cfg, world_size=2, local_world_size=2)
    >>> plan.tables["t_cat_0"].sharding_type, plan.tables["t_cat_0"].ranks
    ('row_wise', [0, 1])
"""

from __future__ import annotations

from omegaconf import DictConfig

from recframe.config.resolve import sparse_optimizer, table_configs
from recframe.config.sharding import LINK_GBPS, TopologyConfig
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner.cost import TableWorkload
from recframe.distributed.planner.planner import Planner, TableConstraint
from recframe.distributed.planner.report import PlanReport
from recframe.distributed.planner.topology import GB, PlanningError, Topology, detect_device_and_memory
from recframe.embedding.config import TableConfig, table_optimizer
from recframe.vocab import CommsDtype, Pooling, RowBlocks, ShardingMode, TopologyDevice


def topology_from_config(topology_cfg: TopologyConfig, world_size: int, local_world_size: int,
                         accelerator: str) -> Topology:
    """A Topology from ``cfg.sharding.topology`` (configured values override detected ones).

    Args:
        topology_cfg: the ``sharding.topology`` node (recframe.config.sharding.TopologyConfig).
        world_size: ranks in all.
        local_world_size: ranks per node, unless the config sets it.
        accelerator: ``trainer.accelerator``.

    Example:
        >>> from recframe.config.sharding import TopologyConfig
        >>> topology_from_config(TopologyConfig(memory_per_rank_gb=80), 8, 8, "gpu").memory_per_rank_bytes
        80000000000
    """
    t = topology_cfg
    local = t.local_world_size if t.local_world_size is not None else local_world_size
    device, detected = detect_device_and_memory(accelerator if t.device == TopologyDevice.auto else t.device, local)
    memory = int(t.memory_per_rank_gb * GB) if t.memory_per_rank_gb is not None else detected
    if memory is None:
        raise PlanningError(f"the tables are to live on GPUs (trainer.accelerator={accelerator}, "
                            f"sharding.topology.device={t.device}) but this machine has no CUDA device to measure "
                            "their memory: set sharding.topology.memory_per_rank_gb (e.g. 80 for H100 80GB)")
    intra, inter = (given if given is not None else default for given, default in
                    zip((t.intra_node_bw_gbps, t.inter_node_bw_gbps), LINK_GBPS[str(device)], strict=True))
    return Topology(world_size=world_size, local_world_size=local, memory_per_rank_bytes=memory,
                    reserved_fraction=t.reserved_fraction, intra_node_bw=intra * GB, inter_node_bw=inter * GB,
                    hbm_bw=t.hbm_bw_gbps * GB, ddr_bw=t.ddr_bw_gbps * GB, device=device)


def planned_world(cfg: DictConfig) -> tuple[int, int]:
    """``(world_size, local_world_size)`` that ``recframe plan`` plans for.

    ``world_size`` is the config's, else ``trainer.devices x trainer.num_nodes``; ranks per node are
    ``trainer.devices`` for the trainer's own world, else the whole given world (one node).
    ``sharding.topology.local_world_size`` overrides the latter inside the planner.
    """
    if cfg.world_size is None:
        return cfg.trainer.devices * cfg.trainer.num_nodes, cfg.trainer.devices
    return cfg.world_size, cfg.world_size


def ids_per_feature(cfg: DictConfig) -> dict[str, float]:
    """Expected ids per sample of each sparse feature: the synthetic data's bag sizes, else 1."""
    sparse = list(cfg.features.sparse)
    counts = list(cfg.data.ids_per_feature) if "ids_per_feature" in cfg.data else [1]
    return {f: float(counts[0] if len(counts) == 1 else counts[i]) for i, f in enumerate(sparse)}


def table_workloads(cfg: DictConfig, tables: list[TableConfig] | None = None) -> list[TableWorkload]:
    """The cost model's view of the tables.

    Args:
        cfg: the run config.
        tables: the model's tables (None: ``cfg``'s tables).
    """
    per_feature, default_opt = ids_per_feature(cfg), sparse_optimizer(cfg)
    comms = cfg.sharding.comms  # the pooled all-to-alls' wire formats: fp32 4 bytes a value, bf16 and fp16 2
    wire = sum(4 if CommsDtype(d) == CommsDtype.fp32 else 2 for d in (comms.forward_dtype, comms.backward_dtype))
    exponent = id_exponent(cfg)
    out = []
    for t in tables if tables is not None else table_configs(cfg):
        constraint = cfg.sharding.constraints[t.name] if t.name in cfg.sharding.constraints else None
        ids = (constraint.ids_per_sample if constraint is not None and constraint.ids_per_sample is not None
               else sum(per_feature[f] for f in t.feature_names))
        out.append(TableWorkload(name=t.name, rows=t.num_embeddings, dim=t.embedding_dim,
                                 num_features=len(t.feature_names), ids_per_sample=ids, weight_dtype=t.weight_dtype,
                                 optimizer=table_optimizer(t, default_opt).name, pooled=t.pooling != Pooling.none,
                                 output_wire_bytes=wire, id_exponent=exponent))
    return out


def id_exponent(cfg: DictConfig) -> float:
    """The id law the cost model counts row blocks' ids by: ``data.zipf_exponent`` with ``sharding.row_blocks=id_mass``
    or ``auto`` (the synthetic data's law; a data source without one: 0), else 0 (``even``: ids spread evenly)."""
    if RowBlocks(cfg.sharding.row_blocks) == RowBlocks.even:
        return 0.0
    return float(cfg.data.get("zipf_exponent", 0.0) or 0.0)


def constraints(cfg: DictConfig) -> dict[str, TableConstraint]:
    """``sharding.constraints`` as the planner's TableConstraints."""
    return {str(name): TableConstraint(sharding_types=tuple(c.sharding_types),
                                       ranks=tuple(c.ranks) if c.ranks is not None else None)
            for name, c in cfg.sharding.constraints.items()}


def manual_plan(cfg: DictConfig, world_size: int) -> ShardingPlan:
    """``sharding.tables`` as a ShardingPlan (unchecked)."""
    return ShardingPlan(world_size, {
        str(name): TablePlacement(p.sharding_type, list(p.ranks),
                                  list(p.shard_sizes) if p.shard_sizes is not None else None, p.compute_kernel)
        for name, p in cfg.sharding.tables.items()})


def make_plan(cfg: DictConfig, world_size: int, local_world_size: int,
              tables: list[TableConfig] | None = None) -> tuple[ShardingPlan, PlanReport]:
    """The sharding plan of a run, checked, and its report; raises PlanningError when none fits.

    Deterministic: every rank computes the same plan from the same config and topology.

    Args:
        cfg: the composed run config (``sharding``, ``tables``, ``data.batch_size``, ``trainer``).
        world_size: ranks in all.
        local_world_size: ranks per node (``sharding.topology.local_world_size`` overrides it).
        tables: the model's tables, when they differ from ``cfg``'s (e.g. a wide part's); None: ``cfg``'s.
    """
    s = cfg.sharding
    topology = topology_from_config(s.topology, world_size, local_world_size, cfg.trainer.accelerator)
    planner = Planner(topology, batch_size=cfg.data.batch_size, data_parallel_max_rows=s.data_parallel_max_rows,
                      min_column_shard_dim=s.min_column_shard_dim, compute_kernel=cfg.tables.backend,
                      row_blocks=s.row_blocks)
    workloads = table_workloads(cfg, tables)
    if s.type == ShardingMode.manual:
        result = planner.check(manual_plan(cfg, world_size), workloads)
    else:
        result = planner.plan(workloads, constraints(cfg), sharding_type=s.type)
    return result.plan, PlanReport.from_result(result, topology, cfg.data.batch_size)

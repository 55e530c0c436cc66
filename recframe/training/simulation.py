"""The step simulator's config adapter: a run config and a plan to the simulated step, beside the cost model's view.

``recframe.distributed.planner.simulate`` counts bytes from a plan's shard layout and ``step_time``
turns them into milliseconds; this module reads the workload off a run config (batch, ids per
feature, the synthetic data's Zipf exponent, optimizers, the model's dense FLOPs, activations and parameters,
the comms wire formats) and scores any plan (the planner's, a saved ``sharding_plan.json``'s, or a
converted TorchRec plan) with both the simulator and the planner's cost model.

Example:
    >>> from recframe.config.compose import compose_config
    >>> from recframe.distributed.planner.step_time import PROFILES
    >>> from recframe.training.planning import make_plan
    >>> cfg = compose_config(["+experiment=dlrm", "sharding.topology.memory_per_rank_gb=4"])
    >>> plan, _ = make_plan(cfg, world_size=2, local_world_size=2)
    >>> score = score_plan(cfg, plan, local_world_size=2, profile=PROFILES["cpu"])
    >>> score.times.step_ms > 0, score.report.busiest.total_ms > 0
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from recframe.config.resolve import sparse_optimizer, table_configs
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.planner.planner import Planner
from recframe.distributed.planner.report import PlanReport
from recframe.distributed.planner.simulate import StepCounts, StepWorkload, count_step
from recframe.distributed.planner.step_time import DeviceProfile, StepTimes, step_times
from recframe.embedding.config import table_optimizer
from recframe.training.planning import ids_per_feature, table_workloads, topology_from_config
from recframe.vocab import CommsDtype


def step_workload(cfg: DictConfig, zipf_exponent: float | None = None,
                  data_parallel_all_reduce: bool = False) -> StepWorkload:
    """The simulator's workload of a run config.

    Args:
        cfg: the run config.
        zipf_exponent: the id law's exponent; None: ``data.zipf_exponent`` for synthetic data, else 0 (uniform:
            the law of a real dataset's ids is not known here).
        data_parallel_all_reduce: count data_parallel tables as an all-reduced dense gradient (TorchRec's way;
            ``StepWorkload``).
    """
    from recframe.training.builders import build_model

    if zipf_exponent is None:
        zipf_exponent = float(cfg.data.zipf_exponent) if "zipf_exponent" in cfg.data else 0.0
    model = build_model(cfg, embedding_device="meta")
    default = sparse_optimizer(cfg)
    wire = [4 if CommsDtype(d) == CommsDtype.fp32 else 2 for d in (cfg.sharding.comms.forward_dtype,
                                                                   cfg.sharding.comms.backward_dtype)]
    return StepWorkload(batch_size=int(cfg.data.batch_size), ids_per_feature=ids_per_feature(cfg),
                        zipf_exponent=zipf_exponent,
                        optimizers={t.name: table_optimizer(t, default).name for t in table_configs(cfg)},
                        dense_flops_per_sample=float(model.dense_flops_per_sample()),
                        dense_activations_per_sample=float(model.dense_activations_per_sample()),
                        dense_parameters=int(model.dense_parameter_count()),
                        forward_wire_bytes=wire[0], backward_wire_bytes=wire[1],
                        data_parallel_all_reduce=data_parallel_all_reduce)


@dataclass
class PlanScore:
    """A plan scored two ways.

    Args:
        counts: the simulator's bytes per rank.
        times: the simulator's milliseconds.
        report: the planner's cost model on the same plan (its per-rank estimate: tables only).
    """

    counts: StepCounts
    times: StepTimes
    report: PlanReport


def score_plan(cfg: DictConfig, plan: ShardingPlan, local_world_size: int, profile: DeviceProfile,
               work: StepWorkload | None = None) -> PlanScore:
    """Simulate one step of ``plan`` and cost it with the planner's cost model.

    Args:
        cfg: the run config (tables, workload, topology).
        plan: the plan to score (its ``world_size`` is the world).
        local_world_size: ranks per node.
        profile: the simulator's device profile.
        work: the workload (None: ``step_workload(cfg)``).
    """
    world = plan.world_size
    work = work if work is not None else step_workload(cfg)
    counts = count_step(table_configs(cfg), plan, local_world_size, work)
    topology = topology_from_config(cfg.sharding.topology, world, local_world_size, cfg.trainer.accelerator)
    s = cfg.sharding
    planner = Planner(topology, batch_size=cfg.data.batch_size, data_parallel_max_rows=s.data_parallel_max_rows,
                      min_column_shard_dim=s.min_column_shard_dim, compute_kernel=cfg.tables.backend)
    result = planner.check(plan, table_workloads(cfg))
    return PlanScore(counts, step_times(counts, profile), PlanReport.from_result(result, topology, cfg.data.batch_size))

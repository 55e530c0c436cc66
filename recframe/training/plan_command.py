"""``recframe plan``: print the sharding plan and memory per rank of a config, without training.

The command line composes and is checked like ``recframe train`` (``recframe.training.app``
runs this job through Hydra). The plan is printed, written to ``<run dir>/sharding_plan.json``
and, with ``logger.tensorboard``, logged to ``<run dir>/tensorboard``. An impossible plan prints
one paragraph naming each table that does not fit, its size and the memory available, and exits
with code 2.

Example:
    $ recframe plan +experiment=mlperf_dcnv2 world_size=8
    $ recframe plan +experiment=dlrm world_size=2 sharding=row_wise sharding.topology.memory_per_rank_gb=16
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from recframe.distributed.planner.topology import PlanningError
from recframe.training.planning import make_plan, planned_world

PLAN_FILE = "sharding_plan.json"


def plan_job(cfg: DictConfig) -> None:
    """Make, print and save the plan of ``cfg`` for ``world_size`` ranks; exit code 2 when none fits.

    Args:
        cfg: the composed config (``world_size`` None: the trainer's devices x nodes).
    """
    world_size, local_world_size = planned_world(cfg)
    try:
        _, report = make_plan(cfg, world_size, local_world_size)
    except PlanningError as error:
        print(f"recframe plan: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_dir = Path(cfg.run_dir)
    print(report.format())
    report.write_json(run_dir / PLAN_FILE)
    if cfg.logger.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
        report.log_to_tensorboard(writer)
        writer.close()
    print(f"\nwritten: {run_dir / PLAN_FILE}")

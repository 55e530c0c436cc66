"""The sharding planner: topology, cost model, greedy placement, report.

A run config becomes a plan through ``recframe.training.planning.make_plan`` (the config adapter)
and ``recframe plan`` prints it (``recframe.training.plan_command``).

Example:
    >>> from recframe.config.compose import compose_config
    >>> from recframe.training.planning import make_plan
    >>> cfg = compose_config(["+experiment=dlrm", "sharding.topology.memory_per_rank_gb=4"])
    >>> plan, report = make_plan(cfg, world_size=2, local_world_size=2)
    >>> len(plan.tables), report.busiest.rank in (0, 1)
    (26, True)
"""

from recframe.distributed.planner.cost import OptionCost, TableWorkload, option_cost
from recframe.distributed.planner.planner import Planner, PlanResult, TableConstraint
from recframe.distributed.planner.report import PlanReport
from recframe.distributed.planner.topology import PlanningError, Topology

__all__ = ["OptionCost", "PlanReport", "PlanResult", "Planner", "PlanningError", "TableConstraint", "TableWorkload",
           "Topology", "option_cost"]

"""The sharding planner: topology, cost model, greedy placement, report, ``recframe plan``.

Example:
    >>> from recframe.config.compose import compose_config
    >>> cfg = compose_config(["+experiment=dlrm", "sharding.topology.memory_per_rank_gb=4"])
    >>> plan, report = make_plan(cfg, world_size=2, local_world_size=2)
    >>> len(plan.tables), report.busiest.rank in (0, 1)
    (26, True)
"""

from recframe.distributed.planner.cost import OptionCost, TableWorkload, option_cost
from recframe.distributed.planner.from_config import make_plan, planned_world
from recframe.distributed.planner.planner import Planner, PlanResult, TableConstraint
from recframe.distributed.planner.report import PlanReport
from recframe.distributed.planner.topology import PlanningError, Topology, topology_from_config

__all__ = ["OptionCost", "PlanReport", "PlanResult", "Planner", "PlanningError", "TableConstraint", "TableWorkload",
           "Topology", "make_plan", "option_cost", "planned_world", "topology_from_config"]

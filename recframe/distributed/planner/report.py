"""PlanReport: a sharding plan with its memory and estimated cost, as text, JSON and TensorBoard.

The text is two tables: one line per table (type, ranks, rows x dim, memory with optimizer
state), then one line per rank (table memory used / available, estimated lookup and
communication milliseconds per step), then the balance: the estimated max and mean step cost, their
ratio and the critical rank's lookup, intra-node and inter-node communication milliseconds.
``to_dict`` is what ``sharding_plan.json`` holds; its ``plan`` entry loads back with
``ShardingPlan.from_dict``.

Example:
    >>> from recframe.distributed.planner.cost import TableWorkload
    >>> from recframe.distributed.planner.planner import Planner
    >>> from recframe.distributed.planner.topology import Topology, format_bytes
    >>> topo = Topology(2, 2, 10**9)
    >>> result = Planner(topo, batch_size=64).plan([TableWorkload("t0", 1000, 16, 1, 1.0)])
    >>> report = PlanReport.from_result(result, topo, batch_size=64)
    >>> report.tables[0].name, report.tables[0].memory_bytes
    ('t0', 68000)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recframe.distributed.plan import ShardingPlan
from recframe.distributed.planner.planner import PlanResult
from recframe.distributed.planner.topology import Topology, format_bytes
from recframe.vocab import ShardingType


class ScalarTextWriter(Protocol):
    """What the report logs to: a torch SummaryWriter (Lightning's ``logger.experiment``) fits."""

    def add_text(self, tag: str, text_string: str, global_step: int | None = None) -> None: ...

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None: ...


@dataclass
class TableLine:
    """One table of the plan: where it is and what it holds in all (over its ranks)."""

    name: str
    sharding_type: ShardingType
    ranks: list[int]
    rows: int
    dim: int
    memory_bytes: int


@dataclass
class RankLine:
    """One rank: table memory and estimated step cost."""

    rank: int
    memory_bytes: int
    available_bytes: int
    lookup_ms: float
    comm_ms: float
    inter_ms: float = 0.0  # the part of comm_ms between nodes

    @property
    def total_ms(self) -> float:
        return self.lookup_ms + self.comm_ms

    @property
    def intra_ms(self) -> float:
        """The part of ``comm_ms`` inside the node."""
        return self.comm_ms - self.inter_ms


def format_ranks(ranks: list[int]) -> str:
    """``0-3,6``: ranks as runs."""
    runs: list[str] = []
    start = prev = None
    for r in [*ranks, None]:
        if r is not None and prev is not None and r == prev + 1:
            prev = r
            continue
        if start is not None:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = r
    return ",".join(runs)


@dataclass
class PlanReport:
    """A plan with its per-table and per-rank figures.

    Args:
        plan: the plan.
        topology: the ranks it is for.
        source: ``auto``, a sharding type, or ``manual``.
        batch_size: samples per rank per step the costs assume.
        tables: one line per table, in the config's order.
        ranks: one line per rank.
        critical_tables: the tables costing the busiest rank most, ``(name, ms)``, most first (up to 3).
    """

    plan: ShardingPlan
    topology: Topology
    source: str
    batch_size: int
    tables: list[TableLine]
    ranks: list[RankLine]
    critical_tables: list[tuple[str, float]] = field(default_factory=list)

    @staticmethod
    def from_result(result: PlanResult, topology: Topology, batch_size: int) -> PlanReport:
        """The report of a planner result."""
        tables = [TableLine(name, placement.sharding_type, list(placement.ranks), result.tables[name].rows,
                            result.tables[name].dim, sum(result.costs[name].memory))
                  for name, placement in result.plan.tables.items()]
        ranks = [RankLine(r, sum(c.memory[r] for c in result.costs.values()), topology.usable_memory_bytes,
                          1e3 * sum(c.lookup_s[r] for c in result.costs.values()),
                          1e3 * sum(c.comm_s[r] for c in result.costs.values()),
                          1e3 * sum(c.inter_s[r] for c in result.costs.values() if c.inter_s is not None))
                 for r in range(topology.world_size)]
        report = PlanReport(result.plan, topology, result.source, batch_size, tables, ranks)
        r = report.busiest.rank
        costs = sorted(((1e3 * (c.lookup_s[r] + c.comm_s[r]), name) for name, c in result.costs.items()), reverse=True)
        report.critical_tables = [(name, ms) for ms, name in costs[:3] if ms > 0]
        return report

    @property
    def busiest(self) -> RankLine:
        """The rank with the largest estimated step cost."""
        return max(self.ranks, key=lambda line: (line.total_ms, -line.rank))

    @property
    def mean_ms(self) -> float:
        """The mean estimated step cost over the ranks."""
        return sum(line.total_ms for line in self.ranks) / len(self.ranks)

    @property
    def imbalance(self) -> float:
        """max / mean of the estimated step cost (1.0: balanced; the job runs at the slowest rank's pace)."""
        mean = self.mean_ms
        return self.busiest.total_ms / mean if mean > 0 else 1.0

    def balance_line(self) -> str:
        """Max, mean, max/mean and where the critical rank's time goes."""
        b = self.busiest
        return (f"estimated step (tables only): max {b.total_ms:.3f} ms on rank {b.rank} (lookup {b.lookup_ms:.3f}, "
                f"intra-node comm {b.intra_ms:.3f}, inter-node comm {b.inter_ms:.3f}), mean {self.mean_ms:.3f} ms, "
                f"max/mean {self.imbalance:.2f}" + "".join(
                    f"{'; its costliest tables: ' if i == 0 else ', '}{name} "
                    f"({self.plan.tables[name].sharding_type}) {ms:.3f} ms"
                    for i, (name, ms) in enumerate(self.critical_tables)))

    def format(self) -> str:
        """The plan as a printed table, then memory and cost per rank."""
        header = (f"sharding plan ({self.source}) for {self.topology.describe()}; batch {self.batch_size} per rank")
        name_w = max(5, *(len(t.name) for t in self.tables))
        ranks_w = max(5, *(len(format_ranks(t.ranks)) for t in self.tables))
        lines = [header, "", f"{'table':<{name_w}}  {'type':<14}  {'ranks':<{ranks_w}}  {'rows x dim':>20}  memory"]
        for t in self.tables:
            lines.append(f"{t.name:<{name_w}}  {t.sharding_type:<14}  {format_ranks(t.ranks):<{ranks_w}}  "
                         f"{f'{t.rows:,} x {t.dim}':>20}  {format_bytes(t.memory_bytes)}")
        lines += ["", f"{'rank':<5}  {'table memory / available':<30}  {'lookup ms':>9}  {'comm ms':>8}  "
                      f"{'est. ms':>8}"]
        for r in self.ranks:
            used = f"{format_bytes(r.memory_bytes)} / {format_bytes(r.available_bytes)} " \
                   f"({r.memory_bytes / r.available_bytes:.0%})"
            lines.append(f"{r.rank:<5}  {used:<30}  {r.lookup_ms:>9.3f}  {r.comm_ms:>8.3f}  {r.total_ms:>8.3f}")
        total = sum(t.memory_bytes for t in self.tables)
        lines += ["", f"{len(self.tables)} tables, {format_bytes(total)} with optimizer state; most loaded: rank "
                      f"{self.busiest.rank} at an estimated {self.busiest.total_ms:.3f} ms per step (tables only)",
                  self.balance_line()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report, JSON-ready (``plan`` loads with ``ShardingPlan.from_dict``)."""
        return {
            "source": self.source,
            "batch_size": self.batch_size,
            "topology": asdict(self.topology),
            "plan": self.plan.to_dict(),
            "tables": [asdict(t) for t in self.tables],
            "ranks": [{**asdict(r), "total_ms": r.total_ms} for r in self.ranks],
            "max_rank_est_ms": self.busiest.total_ms,
            "mean_rank_est_ms": self.mean_ms,
            "max_over_mean": self.imbalance,
            "critical_rank": {"rank": self.busiest.rank, "lookup_ms": self.busiest.lookup_ms,
                              "intra_node_comm_ms": self.busiest.intra_ms, "inter_node_comm_ms": self.busiest.inter_ms,
                              "costliest_tables": [{"table": n, "ms": ms} for n, ms in self.critical_tables]},
        }

    def write_json(self, path: Path) -> None:
        """Write ``to_dict`` to ``path`` (``sharding_plan.json``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def log_to_tensorboard(self, writer: ScalarTextWriter, step: int = 0) -> None:
        """The printed plan as text ``plan``; per rank ``tables/plan_memory_gb/rank_<r>`` and
        ``perf/plan_est_ms/rank_<r>``.

        Args:
            writer: a SummaryWriter.
            step: the global step to log at.
        """
        writer.add_text("plan", "\n".join("    " + line for line in self.format().splitlines()), step)
        for r in self.ranks:
            writer.add_scalar(f"tables/plan_memory_gb/rank_{r.rank}", r.memory_bytes / 1e9, step)
            writer.add_scalar(f"perf/plan_est_ms/rank_{r.rank}", r.total_ms, step)

"""The planner: choose a sharding type and ranks for every table, within memory, balancing cost.

Objective: the smallest most-loaded rank (its estimated step seconds). Greedy: tables are taken
largest first (memory with optimizer state); for each, every candidate placement allowed by the
constraints is costed (``cost.option_cost``) and the one that fits every rank's memory and gives
the smallest most-loaded-rank cost wins (ties: the least loaded touched rank, then the smallest
total cost, then the lower memory peak, then ``ShardingType``'s order). A table that fits nowhere,
or whose constraint allows no placement, is collected; after all tables one PlanningError names
each such table with its size and the memory available. Three more greedy passes (costliest table
first; and both orders scoring a placement by the mean the ranks will reach at least, so that two
tables may take two nodes rather than both spread over all ranks) may give a smaller most-loaded
rank; the best plan is then refined: the tables on the most-loaded rank are re-placed one at a
time, given all the others, while that lowers it. Each pass is O(tables x candidates x world).
Where that plan holds a table whose shards reduce inside a node (table_row_wise on one node), the
same search runs again with table_row_wise also proposed over the 2 and 4 least-loaded nodes
(``NODE_SPANS``: each node reduces its own shards' partial sums), and its plan is kept if its
most-loaded rank is smaller (searched apart: a greedy pass that may spread a table over nodes
places it early where it looks cheap, and can end worse than the one-node plan).

Candidates per table, over its pool of ranks (pinned ranks, else all), come from each sharding
type's rule (``ShardingRule.candidates`` in ``recframe.distributed.sharding``):

- ``table_wise``: each rank of the pool (a pool of more than 64 ranks: its 64 least-loaded ranks with room).
- ``row_wise``: all ranks of the pool, rows split evenly (auto: at least two ranks); a table with
  fewer rows than ranks goes to its least-loaded ranks, one row each.
- ``column_wise``: the least-loaded ``n`` ranks of the pool for ``n`` in 2, 4, 8, ... and the pool
  size, with at least ``min_column_shard_dim`` columns per shard (a fixed ``column_wise``: the whole
  pool, up to one rank per column); auto never column-shards a table whose optimizer it does not
  train exactly (rowwise_adagrad, rowwise_adam, lamb: ``ShardingRule.is_exact``).
- ``table_row_wise``: the pool's ranks of one node (at most one per row), for each node (more than 8
  nodes: the 8 whose most loaded rank is least loaded); in the spread search also those of the 2 and 4
  least-loaded nodes; auto: only with several nodes.
- ``row_wise_routed``: as row_wise (every optimizer is exact: each row's state lives on one shard).

Each candidate is costed in O(world) numpy work (``cost.option_arrays``), so a table costs
O(candidates x world): 4,096 ranks plan in seconds.
- ``data_parallel``: every rank (never for a pinned table); auto: only tables of at most
  ``data_parallel_max_rows`` rows and only with several ranks.

With ``row_blocks=id_mass`` or ``auto`` and a table whose ids are skewed (``TableWorkload.id_exponent``), each row split
(row_wise, table_row_wise, row_wise_routed) is proposed twice on the same ranks: in even blocks and in blocks
of equal id mass (``IdLaw.balanced_sizes``, as ``shard_sizes``; row_wise_routed: of equal expected distinct
ids per rank, which is what a rank sends it); the cost model counts each block's ids by the law, so the
cheaper wins.

Allowed types come from the table's constraint if it lists any, else from a fixed
``sharding.type``, else all six (the auto limits above apply only then).

Example:
    >>> from recframe.distributed.planner.cost import TableWorkload
    >>> from recframe.distributed.planner.topology import Topology
    >>> tables = [TableWorkload(f"t{i}", rows=1000, dim=16, num_features=1, ids_per_sample=1.0) for i in range(4)]
    >>> result = Planner(Topology(2, 2, 10**9), batch_size=64).plan(tables, sharding_type="table_wise")
    >>> sorted(p.ranks[0] for p in result.plan.tables.values())
    [0, 0, 1, 1]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from recframe.config.sharding import ShardingConfig
from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.planner.cost import (
    WEIGHT_BYTES,
    OptionArrays,
    OptionCost,
    TableWorkload,
    option_arrays,
    option_cost,
)
from recframe.distributed.planner.id_law import IdLaw
from recframe.distributed.planner.topology import PlanningError, Topology, format_bytes
from recframe.distributed.sharding import rule_for
from recframe.distributed.sharding.base import Axis, Combine, PlacementQuery
from recframe.vocab import Backend, RowBlocks, ShardingMode, ShardingType


@dataclass(frozen=True)
class TableConstraint:
    """What the planner may do with one table.

    Args:
        sharding_types: allowed types (empty: the planner's choice).
        ranks: the ranks its shards may go to (None: any).
    """

    sharding_types: tuple[ShardingType, ...] = ()
    ranks: tuple[int, ...] | None = None


@dataclass
class PlanResult:
    """A plan and what it costs: per table, its OptionCost; ``source`` says how it was made."""

    plan: ShardingPlan
    costs: dict[str, OptionCost]
    source: str
    tables: dict[str, TableWorkload]


NODE_SPANS = (2, 4)  # the spread search also tries table_row_wise over this many least-loaded nodes
REFINE_ROUNDS = 64  # at most this many re-placements after the greedy passes
REFINE_GAIN = 1e-6  # a re-placement must lower the most-loaded rank by this share


@functools.lru_cache(maxsize=4096)
def _balanced_sizes(exponent: float, rows: int, shards: int, draws: float | None,
                    distinct_weight: float | None = None) -> tuple[int, ...]:
    """``IdLaw(exponent).balanced_sizes(...)``, computed once per planning (every greedy pass asks)."""
    return tuple(IdLaw(exponent).balanced_sizes(rows, shards, draws, distinct_weight))


def _most_loaded(chosen: dict[str, OptionArrays]) -> float:
    """The most-loaded rank's estimated seconds under the placements ``chosen``."""
    return float(sum(c.seconds for c in chosen.values()).max()) if chosen else 0.0


class Planner:
    """Places tables on the ranks of a topology by the cost model.

    Args:
        topology: ranks, memory and bandwidths.
        batch_size: samples per rank per step.
        data_parallel_max_rows: auto replicates only tables with at most this many rows.
        min_column_shard_dim: auto column shards have at least this many columns.
        compute_kernel: the kernel backend written into every placement (auto | fbgemm | triton | torch).
        row_blocks: ``id_mass`` or ``auto``: row splits of skewed tables (``id_exponent > 0``) are also proposed in
            blocks of equal id mass; ``even``: never.
    """

    def __init__(self, topology: Topology, batch_size: int,
                 data_parallel_max_rows: int = ShardingConfig.data_parallel_max_rows,
                 min_column_shard_dim: int = ShardingConfig.min_column_shard_dim,
                 compute_kernel: Backend = Backend.auto, row_blocks: RowBlocks = RowBlocks.even) -> None:
        self.topo = topology
        self.batch_size = batch_size
        self.data_parallel_max_rows = data_parallel_max_rows
        self.min_column_shard_dim = min_column_shard_dim
        self.compute_kernel = compute_kernel
        self.row_blocks = RowBlocks(row_blocks)

    def plan(self, tables: list[TableWorkload], constraints: dict[str, TableConstraint] | None = None,
             sharding_type: ShardingMode = ShardingMode.auto) -> PlanResult:
        """Place every table; raises PlanningError naming each table that cannot be placed.

        Four greedy passes (``_greedy``): tables largest first (memory), then costliest first (each table's
        cheapest most-loaded-rank cost when placed alone: the longest-job-first rule of makespan scheduling), and
        both with the mean floor; the plan with the smaller most-loaded rank is refined (``_refine``); then the
        spread search where it may help (module docstring).

        Args:
            tables: the tables.
            constraints: table name -> constraint (tables not named: unconstrained).
            sharding_type: ``auto`` or one sharding type for every table without listed types (``manual``
                is ``check``'s).
        """
        constraints = constraints or {}
        chosen, failures = self._search(tables, constraints, sharding_type, ())
        if failures:
            raise PlanningError(self._failure_message(failures, tables))
        lws = self.topo.local_world_size
        if any(c.placement.rule.reduce_groups(c.placement.ranks, lws) for c in chosen.values()):
            spread, failed = self._search(tables, constraints, sharding_type, NODE_SPANS)
            if not failed and _most_loaded(spread) < _most_loaded(chosen):
                chosen = spread
        plan = ShardingPlan(self.topo.world_size, {t.name: chosen[t.name].placement for t in tables})
        return PlanResult(plan, {t.name: chosen[t.name].cost() for t in tables}, sharding_type,
                          {t.name: t for t in tables})

    def _search(self, tables: list[TableWorkload], constraints: dict[str, TableConstraint],
                sharding_type: ShardingMode, spans: tuple[int, ...]) -> tuple[dict[str, OptionArrays], list[str]]:
        """The four greedy passes (``plan``), the best refined; ``spans``: ``PlacementQuery.node_spans``.

        Returns:
            The placements, and why each table the first pass could not place could not be (then nothing else ran).
        """
        by_memory = sorted(tables, key=lambda t: -t.memory_bytes)
        chosen, failures = self._greedy(by_memory, constraints, sharding_type, spans)
        if failures:
            return chosen, failures
        world = self.topo.world_size
        alone = {t.name: self._best(t, constraints, sharding_type, np.zeros(world), np.zeros(world, dtype=np.int64),
                                    spans=spans) for t in tables}
        work = {n: best[0][2] if best else 0.0 for n, best in alone.items()}  # least total seconds when alone
        by_cost = sorted(by_memory, key=lambda t: -alone[t.name][0][0] if alone[t.name] else 0.0)
        for order, floor in ((by_cost, None), (by_memory, work), (by_cost, work)):
            other, failed = self._greedy(order, constraints, sharding_type, spans, floor)
            if not failed and _most_loaded(other) < _most_loaded(chosen):
                chosen = other
        return self._refine(tables, chosen, constraints, sharding_type, spans), []

    def _greedy(self, tables: list[TableWorkload], constraints: dict[str, TableConstraint],
                sharding_type: ShardingMode, spans: tuple[int, ...], work: dict[str, float] | None = None
                ) -> tuple[dict[str, OptionArrays], list[str]]:
        """Place the tables one by one, in the given order, each where it least raises the most-loaded rank.

        Args:
            tables: the tables, in the order to place them.
            constraints: table name -> constraint.
            sharding_type: ``auto`` or one type.
            spans: ``PlacementQuery.node_spans``.
            work: each table's least total seconds (over all ranks). Given, a placement is scored by the larger
                of the most-loaded rank and the mean that the ranks will reach at least (the placed tables'
                seconds and the ``work`` of those still to place, over the ranks): a rank may fill up to that
                mean for free, so a placement of less total work wins there (two tables on two nodes rather than
                both spread over all ranks).

        Returns:
            The placement of each table placed, and why each other table could not be.
        """
        world = self.topo.world_size
        load, used = np.zeros(world), np.zeros(world, dtype=np.int64)
        chosen: dict[str, OptionArrays] = {}
        failures: list[str] = []
        rest = sum(work.values()) if work is not None else None
        for t in tables:
            if work is not None:
                rest -= work[t.name]
            best = self._best(t, constraints, sharding_type, load, used, rest, spans)
            if best is None:
                failures.append(self._why(t, *self._candidates(t, constraints.get(t.name, TableConstraint()),
                                                               sharding_type, load.tolist(),
                                                               (self.topo.usable_memory_bytes - used).tolist(), spans),
                                          used.tolist()))
                continue
            chosen[t.name] = best[1]
            load = load + best[1].seconds
            used = used + best[1].memory
        return chosen, failures

    def _best(self, t: TableWorkload, constraints: dict[str, TableConstraint], sharding_type: ShardingMode,
              load: np.ndarray, used: np.ndarray, rest: float | None = None,
              spans: tuple[int, ...] = ()) -> tuple[tuple, OptionArrays] | None:
        """The best placement of ``t`` given the other tables' ``load`` and ``used`` memory, and its score.

        The score: the most-loaded rank after it, then its own most-loaded rank, the total cost, the memory
        peak and ``ShardingType``'s order (smaller is better); None when no candidate fits. With ``rest`` (the
        least total seconds of the tables still to place), the score starts with the larger of the most-loaded
        rank and the mean the ranks will reach at least (see ``_greedy``).
        """
        cap = self.topo.usable_memory_bytes
        constraint = constraints.get(t.name, TableConstraint())
        placements, _ = self._candidates(t, constraint, sharding_type, load.tolist(), (cap - used).tolist(), spans)
        best: tuple[tuple, OptionArrays] | None = None
        for placement in placements:
            cost = option_arrays(t, placement, self.topo, self.batch_size)
            after = used + cost.memory
            if (after > cap).any():
                continue
            new = load + cost.seconds
            total = sum(new.tolist())
            score = (new.max(), new[placement.ranks].max(), total, after.max(),
                     list(ShardingType).index(placement.sharding_type))
            if rest is not None:
                score = (max(score[0], (total + rest) / len(new)), *score)
            if best is None or score < best[0]:
                best = (score, cost)
        return best

    def _refine(self, tables: list[TableWorkload], chosen: dict[str, OptionArrays],
                constraints: dict[str, TableConstraint], sharding_type: ShardingMode,
                spans: tuple[int, ...]) -> dict[str, OptionArrays]:
        """Re-place the tables that load the most-loaded rank, one at a time given all the others, while that
        lowers the most-loaded rank (at most ``REFINE_ROUNDS`` moves; each move tries every table on it; ``spans``:
        ``PlacementQuery.node_spans``).

        Returns:
            The refined placements (``chosen`` itself when nothing helps).
        """
        chosen = dict(chosen)
        load = sum(c.seconds for c in chosen.values())
        used = sum(c.memory for c in chosen.values())
        for _ in range(REFINE_ROUNDS):
            critical = int(np.argmax(load))
            on_it = sorted((t for t in tables if chosen[t.name].seconds[critical] > 0),
                           key=lambda t: -chosen[t.name].seconds[critical])
            for t in on_it:
                old = chosen[t.name]
                best = self._best(t, constraints, sharding_type, load - old.seconds, used - old.memory, spans=spans)
                if best is not None and best[0][0] < load.max() * (1 - REFINE_GAIN):
                    chosen[t.name] = best[1]
                    load = load - old.seconds + best[1].seconds
                    used = used - old.memory + best[1].memory
                    break
            else:
                break
        return chosen

    def check(self, plan: ShardingPlan, tables: list[TableWorkload], source: str = "manual") -> PlanResult:
        """Cost a given plan and check it: every table placed validly, every rank within memory.

        Args:
            plan: the plan (e.g. from ``sharding.tables``).
            tables: the model's tables.
            source: how the plan was made, for the report.
        """
        problems = plan.problems({t.name: (t.rows, t.dim) for t in tables})
        if plan.world_size != self.topo.world_size:
            problems.append(f"the plan is for {plan.world_size} ranks, the world has {self.topo.world_size}")
        if problems:
            raise PlanningError("the sharding plan is invalid: " + "; ".join(problems) + ".")
        costs = {t.name: option_cost(t, plan.tables[t.name], self.topo, self.batch_size) for t in tables}
        cap = self.topo.usable_memory_bytes
        over = []
        for rank in range(self.topo.world_size):
            used = sum(c.memory[rank] for c in costs.values())
            if used > cap:
                held = sorted(((c.memory[rank], n) for n, c in costs.items() if c.memory[rank]), reverse=True)
                listed = ", ".join(f"{n!r} {format_bytes(m)}" for m, n in held)
                over.append(f"rank {rank} needs {format_bytes(used)} for {listed}, but has {format_bytes(cap)} for "
                            "tables")
        if over:
            raise PlanningError(f"the sharding plan does not fit ({self.topo.describe()}): " + "; ".join(over)
                                + ". Move tables to other ranks, shard them, or give more memory.")
        return PlanResult(plan, costs, source, {t.name: t for t in tables})

    def _candidates(self, t: TableWorkload, constraint: TableConstraint, sharding_type: ShardingMode,
                    load: list[float], free: list[int], spans: tuple[int, ...] = ()
                    ) -> tuple[list[TablePlacement], list[str]]:
        """Placements allowed for ``t`` (each type's rule proposes its own; ``spans``: ``PlacementQuery.node_spans``),
        and for each allowed type that yields none, why."""
        world, topo = self.topo.world_size, self.topo
        pool = sorted({r for r in constraint.ranks if 0 <= r < world}) if constraint.ranks is not None \
            else list(range(world))
        fixed = sharding_type != ShardingMode.auto and not constraint.sharding_types
        explicit = bool(constraint.sharding_types) or fixed
        types = constraint.sharding_types or ((ShardingType(sharding_type),) if fixed else tuple(ShardingType))
        if not pool:
            return [], [f"none of the pinned ranks {list(constraint.ranks or [])} is in the world of {world}"]
        query = PlacementQuery(rows=t.rows, dim=t.dim, optimizer=t.optimizer, pool=pool,
                               by_load=sorted(pool, key=lambda r: (load[r], r)), world_size=world,
                               nodes=[topo.node_ranks(node) for node in range(topo.num_nodes)], explicit=explicit,
                               fixed=fixed, data_parallel_max_rows=self.data_parallel_max_rows,
                               min_column_shard_dim=self.min_column_shard_dim, free_bytes=free,
                               table_bytes=t.memory_bytes, node_spans=spans)
        out: list[TablePlacement] = []
        reasons: list[str] = []
        by_mass = self.row_blocks != RowBlocks.even and t.id_exponent > 0
        for kind in types:
            rule = rule_for(kind)
            found, why = rule.candidates(query)
            out += [TablePlacement(kind, ranks, compute_kernel=self.compute_kernel) for ranks in found]
            if by_mass and rule.axis == Axis.rows:  # the same ranks in blocks of equal id mass and of equal
                # lookup work (routed: of equal distinct ids a rank sends, as it sends each once)
                for law in self._block_laws(t, rule.combine == Combine.pool):
                    out += [TablePlacement(kind, ranks, list(_balanced_sizes(t.id_exponent, t.rows, len(ranks), *law)),
                                           self.compute_kernel) for ranks in found if 1 < len(ranks) <= t.rows]
            reasons += why
            if explicit and not found and not why:
                reasons.append(f"{kind} has no placement on ranks {pool}")
        return out, reasons

    def _block_laws(self, t: TableWorkload, routed: bool) -> list[tuple[float | None, float | None]]:
        """``(draws, distinct_weight)`` of ``IdLaw.balanced_sizes`` for each row-block sizing proposed for a skewed
        table: routed, equal distinct ids per rank's batch; else equal id mass, and equal lookup work (each of the
        global batch's ids read once, each distinct row's weights and state read and written: ``_lookup_bytes``)."""
        if routed:
            return [(self.batch_size * t.ids_per_sample / max(t.num_features, 1), None)]
        row = t.dim * WEIGHT_BYTES[t.weight_dtype]
        draws = self.batch_size * self.topo.world_size * t.ids_per_sample
        return [(None, None), (draws, 2.0 * (row + t.state_row_bytes(t.dim)) / row)]

    def _why(self, t: TableWorkload, placements: list[TablePlacement], reasons: list[str], used: list[int]) -> str:
        cap = self.topo.usable_memory_bytes
        if not placements:
            return f"table {t.describe()} has a constraint that cannot be met: {'; '.join(reasons)}"
        need = min(max(option_cost(t, p, self.topo, self.batch_size).memory) for p in placements)
        free = max(range(len(used)), key=lambda r: cap - used[r])
        return (f"table {t.describe()} does not fit: its smallest allowed shard needs {format_bytes(need)} on a rank, "
                f"the most free is {format_bytes(cap - used[free])} (rank {free}) of {format_bytes(cap)} for tables "
                "per rank")

    def _failure_message(self, failures: list[str], tables: list[TableWorkload]) -> str:
        total = sum(t.memory_bytes for t in tables)
        cap = self.topo.usable_memory_bytes
        return (f"no sharding plan fits ({self.topo.describe()}): " + "; ".join(failures)
                + f". The tables need {format_bytes(total)} in all; {self.topo.world_size} x {format_bytes(cap)} = "
                f"{format_bytes(self.topo.world_size * cap)} is available for tables. Use more ranks (world_size=N), "
                "relax the constraints, set sharding.topology.memory_per_rank_gb, or cap the tables "
                "(tables.row_cap=N).")

"""Simulate a training step of a sharding plan on every rank, at one or several world sizes (issue 24).

Usage:
    python scripts/simulate_plan.py --worlds 8 64 512 4096 --profile h100 [--experiment mlperf_dcnv2] [overrides ...]
    python scripts/simulate_plan.py --plan outputs/.../sharding_plan.json --local 8 --profile h100 [overrides ...]
    python scripts/simulate_plan.py --experiment dlrm --worlds 2 --local 2 --profile cpu trainer.devices=2

For each world size: the planner's plan (``make_plan``; or ``--plan``, a saved ``sharding_plan.json`` or
a plan in ``ShardingPlan.to_dict`` form) scored by the step simulator
(``recframe.distributed.planner.simulate``: bytes counted from the shard layout and the id law, time by
the device profile) and by the planner's cost model. One markdown row per world: the synchronous step
estimate, each rank's own time (max, mean, max/mean), the critical rank's lookup / intra-node /
inter-node / dense milliseconds, and the cost model's max, mean and max/mean (tables only). With one
world size (or ``--plan``), ``--phases`` adds the per-phase max and mean. ``--dp-all-reduce`` counts
data_parallel tables as TorchRec runs them (the dense gradient in DDP's all-reduce, every row updated)
instead of as recframe's runtime does (its own all-reduce of the replicas' gradients and row counts, only
the touched rows updated).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recframe.config.compose import compose_config
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.planner.step_time import PROFILES
from recframe.training.planning import make_plan
from recframe.training.simulation import PlanScore, score_plan, step_workload

HEADER = ("| ranks | step ms | rank max ms | rank mean ms | max/mean "
          "| critical rank: lookup / intra / inter / dense ms | cost model max ms | cost model mean ms "
          "| cost model max/mean |\n|---|---|---|---|---|---|---|---|---|")


def load_plan(path: Path) -> ShardingPlan:
    """A plan from a ``sharding_plan.json`` (its ``plan``) or from ``ShardingPlan.to_dict``'s JSON.

    Args:
        path: the file.
    """
    data = json.loads(path.read_text())
    return ShardingPlan.from_dict(data["plan"] if "plan" in data else data)


def row(world: int, score: PlanScore) -> str:
    """One markdown row of the table (``HEADER``)."""
    t, report = score.times, score.report
    r = int(t.rank_ms.argmax())
    lookup = t.phase_ms["lookup_forward"][r] + t.phase_ms["lookup_backward"][r]
    return (f"| {world:,} | {t.step_ms:.2f} | {t.max_ms:.2f} | {t.mean_ms:.2f} | {t.max_ms / t.mean_ms:.2f} | "
            f"{lookup:.1f} / {t.comm_ms('intra')[r]:.1f} / {t.comm_ms('inter')[r]:.1f} / "
            f"{t.phase_ms['dense'][r]:.1f} (rank {r}) | {report.busiest.total_ms:.1f} | {report.mean_ms:.1f} | "
            f"{report.imbalance:.2f} |")


def phases(score: PlanScore) -> str:
    """Per-phase max and mean milliseconds over the ranks."""
    lines = ["| phase | max ms | mean ms |", "|---|---|---|"]
    for name, ms in score.times.phase_ms.items():
        if not name.endswith(("_intra", "_inter")):
            lines.append(f"| {name} | {ms.max():.2f} | {ms.mean():.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="mlperf_dcnv2")
    parser.add_argument("--worlds", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--local", type=int, default=8, help="ranks per node")
    parser.add_argument("--plan", type=Path, default=None, help="score this plan instead of the planner's")
    parser.add_argument("--profile", default="h100", choices=sorted(PROFILES))
    parser.add_argument("--zipf", type=float, default=None, help="id law exponent (default: data.zipf_exponent)")
    parser.add_argument("--tflops", type=float, default=None, help="override the profile's matmul TFLOP/s")
    parser.add_argument("--lookup-gbps", type=float, default=None, help="override the profile's lookup GB/s")
    parser.add_argument("--intra-gbps", type=float, default=None, help="override the intra-node GB/s")
    parser.add_argument("--inter-gbps", type=float, default=None, help="override the inter-node GB/s")
    parser.add_argument("--overhead-ms", type=float, default=None, help="override the per-step overhead")
    parser.add_argument("--phases", action="store_true", help="print the per-phase max and mean too")
    parser.add_argument("--dp-all-reduce", action="store_true",
                        help="count data_parallel tables as TorchRec runs them (in DDP's all-reduce), not recframe's")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    changes = {"matmul_tflops": args.tflops, "lookup_gbps": args.lookup_gbps, "intra_node_gbps": args.intra_gbps,
               "inter_node_gbps": args.inter_gbps, "step_overhead_ms": args.overhead_ms}
    profile = PROFILES[args.profile].replace(**{k: v for k, v in changes.items() if v is not None})
    plans = [load_plan(args.plan)] if args.plan is not None else [None] * len(args.worlds)
    worlds = [plans[0].world_size] if args.plan is not None else args.worlds
    print(f"profile: {profile}")
    print(HEADER)
    score = None
    for world, plan in zip(worlds, plans, strict=True):
        local = min(args.local, world)
        cfg = compose_config([f"+experiment={args.experiment}", f"world_size={world}",
                              f"sharding.topology.local_world_size={local}", *args.overrides])
        if plan is None:
            plan, _ = make_plan(cfg, world_size=world, local_world_size=local)
        score = score_plan(cfg, plan, local, profile, step_workload(cfg, args.zipf, args.dp_all_reduce))
        print(row(world, score), flush=True)
    if args.phases and score is not None:
        print()
        print(phases(score))


if __name__ == "__main__":
    main()

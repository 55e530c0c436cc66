"""recframe's and TorchRec's plans of the same tables, scored by the step simulator and the cost model (issue 24).

Usage:
    python scripts/compare_torchrec_plan.py --worlds 64 512 4096 [--torchrec-venv /tmp/torchrec-venv]
        [--timeout 600] [--profile h100] [--zipf S] [--out-dir /tmp/torchrec_plans] [--reuse]
        [--experiment mlperf_dcnv2] [overrides ...]

For each world size (8 ranks a node): recframe's ``make_plan`` (timed), then TorchRec's
EmbeddingShardingPlanner in the TorchRec venv (``scripts/torchrec_plan.py``, timed by TorchRec's own
``plan()`` call and killed after ``--timeout`` seconds; ``--reuse`` reads the plans an earlier run left in
``--out-dir``), its plan converted
(``recframe.distributed.planner.torchrec_plan.from_torchrec``) and both scored: the simulator's synchronous
step, the max, mean and max/mean of each rank's own simulated time (data_parallel as recframe's runtime
runs it: its own all-reduce of the replicas' gradients and row counts, the touched rows updated), the step and
max/mean with data_parallel as TorchRec runs it (the dense gradient in DDP's all-reduce, every row updated),
and the cost model's max, mean and max/mean. The sharding types each planner
chose are listed under the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

from recframe.config.compose import compose_config
from recframe.config.resolve import sparse_optimizer, table_configs
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.planner.step_time import PROFILES, DeviceProfile
from recframe.distributed.planner.torchrec_plan import from_torchrec, torchrec_spec
from recframe.training.planning import ids_per_feature, make_plan
from recframe.training.simulation import score_plan, step_workload

SCRIPT = Path(__file__).resolve().parent / "torchrec_plan.py"
HEADER = ("| ranks | planner | plan s | simulated step ms | rank max ms | rank mean ms | max/mean "
          "| step ms, data_parallel all-reduced | max/mean | cost model max ms | cost model mean ms "
          "| cost model max/mean |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def torchrec_plan(cfg, world: int, local: int, args: argparse.Namespace) -> tuple[dict | None, str]:  # noqa: ANN001
    """TorchRec's plan JSON for ``cfg``'s tables at ``world`` ranks, or None and why."""
    spec = torchrec_spec(table_configs(cfg), ids_per_feature(cfg), world, local, int(cfg.data.batch_size),
                         float(cfg.sharding.topology.memory_per_rank_gb), str(sparse_optimizer(cfg).name))
    spec_path, out_path = args.out_dir / f"spec_{world}.json", args.out_dir / f"torchrec_plan_{world}.json"
    if args.reuse and out_path.exists():
        return json.loads(out_path.read_text()), ""
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    try:
        done = subprocess.run([str(args.torchrec_venv / "bin" / "python"), str(SCRIPT), str(spec_path), str(out_path)],
                              capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"killed after {args.timeout} s"
    if done.returncode != 0:
        return None, f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return json.loads(out_path.read_text()), ""


def line(world: int, name: str, seconds: float, cfg, plan: ShardingPlan, local: int,  # noqa: ANN001
         profile: DeviceProfile, zipf: float | None) -> str:
    """One row of the table."""
    score = score_plan(cfg, plan, local, profile, step_workload(cfg, zipf))
    t, r = score.times, score.report
    a = score_plan(cfg, plan, local, profile, step_workload(cfg, zipf, data_parallel_all_reduce=True)).times
    return (f"| {world:,} | {name} | {seconds:.2f} | {t.step_ms:.1f} | {t.max_ms:.1f} | {t.mean_ms:.1f} | "
            f"{t.max_ms / t.mean_ms:.2f} | {a.step_ms:.1f} | {a.max_ms / a.mean_ms:.2f} | {r.busiest.total_ms:.1f} | "
            f"{r.mean_ms:.1f} | {r.imbalance:.2f} |")


def kinds(plan: ShardingPlan) -> str:
    """``row_wise_routed 13, data_parallel 13``."""
    return ", ".join(f"{k} {n}" for k, n in Counter(str(p.sharding_type) for p in plan.tables.values()).most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--local", type=int, default=8)
    parser.add_argument("--experiment", default="mlperf_dcnv2")
    parser.add_argument("--profile", default="h100", choices=sorted(PROFILES))
    parser.add_argument("--zipf", type=float, default=None, help="id law exponent (default: data.zipf_exponent)")
    parser.add_argument("--torchrec-venv", type=Path, default=Path("/tmp/torchrec-venv"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before TorchRec's planner is killed")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/torchrec_plans"))
    parser.add_argument("--reuse", action="store_true",
                        help="read TorchRec's plans already in --out-dir (with their planning seconds), do not plan")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    profile = PROFILES[args.profile]
    rows, notes = [], []
    for world in args.worlds:
        local = min(args.local, world)
        cfg = compose_config([f"+experiment={args.experiment}", f"world_size={world}",
                              f"sharding.topology.local_world_size={local}", *args.overrides])
        start = time.perf_counter()
        ours, _ = make_plan(cfg, world_size=world, local_world_size=local)
        rows.append(line(world, "recframe", time.perf_counter() - start, cfg, ours, local, profile, args.zipf))
        notes.append(f"{world:,} ranks, recframe: {kinds(ours)}")
        theirs, why = torchrec_plan(cfg, world, local, args)
        if theirs is None:
            rows.append(f"| {world:,} | TorchRec | {why} | - | - | - | - | - | - | - | - | - |")
        else:
            converted = from_torchrec(theirs)
            rows.append(line(world, "TorchRec", theirs["planner_seconds"], cfg, converted, local, profile, args.zipf))
            notes.append(f"{world:,} ranks, TorchRec {theirs['torchrec_version']}: {kinds(converted)}")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    print(f"\nprofile: {profile}; Zipf exponent: {'data.zipf_exponent' if args.zipf is None else args.zipf}\n{HEADER}")
    print("\n".join(rows))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()

"""Plan a config at several world sizes and print the planning seconds and the estimated balance (issue 24).

Usage:
    python scripts/plan_scale.py --worlds 64 512 4096 [--local 8] [--experiment mlperf_dcnv2] [overrides ...]

One line per world size: ``make_plan``'s wall seconds (after composing the config), the estimated
max and mean step cost (tables only), max/mean, and the critical rank's lookup, intra- and
inter-node communication milliseconds (``PlanReport.balance_line``).
"""

from __future__ import annotations

import argparse
import time

from recframe.config.compose import compose_config
from recframe.training.planning import make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--local", type=int, default=8, help="ranks per node")
    parser.add_argument("--experiment", default="mlperf_dcnv2")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print("| ranks | plan s | max ms | mean ms | max/mean | critical rank: lookup / intra / inter ms |")
    print("|---|---|---|---|---|---|")
    for world in args.worlds:
        cfg = compose_config([f"+experiment={args.experiment}", f"world_size={world}",
                              f"sharding.topology.local_world_size={args.local}", *args.overrides])
        start = time.perf_counter()
        _, report = make_plan(cfg, world_size=world, local_world_size=args.local)
        seconds = time.perf_counter() - start
        b = report.busiest
        print(f"| {world:,} | {seconds:.2f} | {b.total_ms:.1f} | {report.mean_ms:.1f} | {report.imbalance:.2f} | "
              f"{b.lookup_ms:.1f} / {b.intra_ms:.1f} / {b.inter_ms:.1f} (rank {b.rank}) |", flush=True)


if __name__ == "__main__":
    main()

"""Training throughput of `recframe bench` against a bare loop, plain PyTorch and TorchRec, in one run.

Every system trains the same workload (the `dlrm` experiment = ../shared/bench/torchrec_dlrm.py's
defaults) one after the other on this machine, and the script prints a markdown table:
samples/s, ms per step, the ratio to TorchRec, and recframe's framework overhead (Lightning,
logging, metrics) as the bare loop's speed over `recframe bench`'s.

    python scripts/bench_trainer.py                                   # recframe, bare loop, plain PyTorch
    python scripts/bench_trainer.py --torchrec-venv /tmp/torchrec-venv   # + TorchRec (setup_torchrec_venv.sh)
    python scripts/bench_trainer.py --steps 50 -- tables.backend=torch   # extra recframe overrides after --
    python scripts/bench_trainer.py --devices 2 --torchrec-venv /tmp/torchrec-venv  # 2 processes each (gloo)

With ``--devices N`` (N > 1) recframe trains with ``trainer.devices=N`` (sharding from the planner)
and TorchRec with ``torchrun --nproc_per_node=N``; the bare loop and plain PyTorch are one-process
anchors and are left out. samples/s counts all ranks.

The bare loop builds the very same model, optimizer and synthetic batches from the config and
steps them with nothing else around: forward, loss, backward (tables update inside), dense step.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"


def last_json_line(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON line in the output:\n{text[-2000:]}")
    return json.loads(lines[-1])


def run(cmd: list[str]) -> dict:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return last_json_line(result.stdout)


def bare_loop(overrides: list[str], warmup: int, steps: int) -> dict:
    """The same model and data as `recframe bench`, stepped in a plain loop (run in a subprocess)."""
    import torch

    from recframe.config.compose import compose_config
    from recframe.training.builders import build_datamodule, build_model
    from recframe.training.module import build_dense_optimizer, dense_parameters
    from recframe.training.objectives import training_loss
    from recframe.training.schedule import build_scheduler

    cfg = compose_config(["+experiment=dlrm", "run_dir=unused", *overrides])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = build_dense_optimizer(dense_parameters(model), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim.schedule)
    generator = build_datamodule(cfg).generator
    batch_size = cfg.data.batch_size
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss, _ = training_loss(model, generator.batch(i, batch_size))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    elapsed = time.perf_counter() - start
    return {"system": "bare loop", "samples_per_s": round(steps * batch_size / elapsed, 1),
            "step_ms": round(1000 * elapsed / steps, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--devices", type=int, default=1, help="processes per system (CPU: gloo)")
    parser.add_argument("--torchrec-venv", type=Path, default=None, help="TorchRec venv (setup_torchrec_venv.sh)")
    parser.add_argument("--bare-loop-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="recframe overrides (after --)")
    args = parser.parse_args()
    if args.bare_loop_only:
        print(json.dumps(bare_loop(args.overrides, args.warmup, args.steps)))
        return

    py = sys.executable
    rows: list[dict] = []
    recframe = run([py, "-m", "recframe", "bench", "+experiment=dlrm", f"bench.warmup_steps={args.warmup}",
                    f"bench.steps={args.steps}", f"trainer.devices={args.devices}", "hydra.run.dir=/tmp/recframe_bench",
                    *args.overrides])
    rows.append({**recframe, "system": f"recframe bench ({args.devices} proc)"})
    if args.devices == 1:
        rows.append(run([py, __file__, "--bare-loop-only", f"--steps={args.steps}", f"--warmup={args.warmup}", "--",
                         *args.overrides]))
        plain = run([py, str(SHARED_BENCH / "plain_torch_dlrm.py"), f"--steps={args.steps}"])
        rows.append({**plain, "system": "plain PyTorch"})
    if args.torchrec_venv is not None:
        torchrun = str(args.torchrec_venv / "bin" / "torchrun")
        script = str(SHARED_BENCH / "torchrec_dlrm.py")
        torchrec = run([torchrun, "--standalone", f"--nproc_per_node={args.devices}", script, f"--steps={args.steps}",
                        f"--warmup={args.warmup}"])
        rows.append({**torchrec, "system": f"TorchRec ({args.devices} proc)"})

    import torch

    anchor = next((r["samples_per_s"] for r in rows if r["system"].startswith("TorchRec")), None)
    print(f"# dlrm workload, batch 2048, {args.steps} timed steps; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {date.today()}")
    print("| system | samples/s | ms/step | vs TorchRec |")
    print("|---|---|---|---|")
    for r in rows:
        ratio = f"{r['samples_per_s'] / anchor:.2f}x" if anchor else "-"
        print(f"| {r['system']} | {r['samples_per_s']:,.0f} | {r['step_ms']:.1f} | {ratio} |")
    if args.devices == 1:
        overhead = rows[1]["samples_per_s"] / rows[0]["samples_per_s"] - 1
        print(f"\nframework overhead (bare loop / recframe bench - 1): {100 * overhead:+.1f}%")


if __name__ == "__main__":
    main()

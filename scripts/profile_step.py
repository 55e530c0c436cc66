"""Where a training step's time goes, by phase: data, forward, backward (+ fused sparse update), dense optimizer.

Steps the config's model in a plain loop (no Lightning) on batches made the way `recframe train` makes
them on that device, and times each phase twice: on the host (the Python and launch time of the
phase, without waiting for the GPU) and on the device (CUDA events around the phase's kernels).
With --graph the forward and backward run as the training step's CUDA graph (recframe.training.step_graph,
as `trainer.cuda_graph=auto` trains): the forward phase is the replay (forward, loss, backward), the backward
phase is empty. Then it runs `recframe bench` with the same overrides: its ms/step minus the loop's is the
framework's share (Lightning's loop, hooks, logging, callbacks). With --trace it also prints
torch.profiler's top operators by host time (and, on a GPU, by device time); --export PATH also writes the
profile as a Chrome trace. Prints one markdown table.

    python scripts/profile_step.py +experiment=dlrm trainer.accelerator=gpu data.zipf_exponent=0
    python scripts/profile_step.py --trace +experiment=mlperf_dcnv2 tables.row_cap=4000000 trainer.accelerator=gpu
    python scripts/profile_step.py --graph +experiment=mlperf_dcnv2 tables.row_cap=4000000 trainer.accelerator=gpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("data", "forward", "backward", "optimizer")


class PhaseClock:
    """Host and device time per phase, summed over steps."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.host = dict.fromkeys(PHASES, 0.0)
        self.events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {p: [] for p in PHASES}

    def phase(self, name: str):  # noqa: ANN201 (a context manager)
        clock = self

        class _Phase:
            def __enter__(self) -> None:
                if clock.cuda:
                    self.begin = torch.cuda.Event(enable_timing=True)
                    self.begin.record()
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                clock.host[name] += time.perf_counter() - self.t0
                if clock.cuda:
                    end = torch.cuda.Event(enable_timing=True)
                    end.record()
                    clock.events[name].append((self.begin, end))

        return _Phase()

    def device_ms(self, name: str) -> float:
        return sum(b.elapsed_time(e) for b, e in self.events[name])


def loop(overrides: list[str], warmup: int, steps: int, trace: bool, graph: bool = False,
         export: str | None = None) -> dict:
    """The phased plain loop; returns ms per step per phase (host and device) and the loop's wall ms/step.
    With ``export`` (a path) the profile, operators' input shapes included, is also written as a Chrome trace."""
    from recframe.training.builders import build_datamodule, build_model
    from recframe.training.checks import compose_config
    from recframe.training.dense_optimizers import build_dense_optimizer
    from recframe.training.module import dense_parameters
    from recframe.training.objectives import training_loss
    from recframe.training.step_graph import GraphedStep
    from recframe.vocab import MatmulPrecision

    cfg = compose_config(["run_dir=unused", *overrides])
    cuda = cfg.trainer.accelerator == "gpu"
    device = torch.device("cuda" if cuda else "cpu")
    torch.set_float32_matmul_precision(MatmulPrecision(cfg.trainer.matmul_precision).value)
    torch.manual_seed(cfg.seed)
    with device:  # built where it trains, as Lightning's configure_model does: the same embedding backend (auto)
        model = build_model(cfg)
    optimizer = build_dense_optimizer(dense_parameters(model), cfg.optim, device)
    datamodule = build_datamodule(cfg)
    datamodule.device = device  # batches made (or copied) as in a training run on that device
    loader = iter(datamodule.train_dataloader())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.trainer.precision == "bf16-mixed" else nullcontext()
    graphed = GraphedStep(lambda b: training_loss(model, b), dense_parameters(model), model) if graph else None
    clock = PhaseClock(cuda)
    profiler = None
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            clock = PhaseClock(cuda)
            start = time.perf_counter()
            if trace:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if cuda:
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                profiler = torch.profiler.profile(activities=activities, record_shapes=export is not None)
                profiler.__enter__()
        with clock.phase("data"):
            batch = datamodule.materialize(next(loader), device)
        if graphed is not None:
            with clock.phase("forward"), autocast:
                graphed(batch)  # forward, loss and backward: the replay
        else:
            with clock.phase("forward"), autocast:
                loss, _ = training_loss(model, batch)
            with clock.phase("backward"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
        with clock.phase("optimizer"):
            optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    wall = 1000 * (time.perf_counter() - start) / steps
    if graphed is not None:
        print(f"step graph: {graphed.captures} capture(s), {graphed.eager_steps} eager step(s)", file=sys.stderr)
    elif cuda:
        report_syncs(model, optimizer, datamodule, loader, device)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        if export is not None:
            profiler.export_chrome_trace(export)
        averages = profiler.key_averages()
        print(averages.table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
        if cuda:  # the kernels by device time: where the GPU's share of a step goes
            print(averages.table(sort_by="self_device_time_total", row_limit=30), file=sys.stderr)
    out = {"loop_ms": round(wall, 3), "batch_size": cfg.data.batch_size}
    for p in PHASES:
        out[f"{p}_host_ms"] = round(1000 * clock.host[p] / steps, 3)
        out[f"{p}_device_ms"] = round(clock.device_ms(p) / steps, 3) if cuda else None
    return out


def report_syncs(model, optimizer, datamodule, loader, device) -> None:  # noqa: ANN001 (the loop's objects)
    """Print the host synchronizations of one more step (torch.cuda's sync debug mode, as warnings)."""
    import warnings

    from recframe.training.objectives import training_loss

    batch = datamodule.materialize(next(loader), device)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loss, _ = training_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    print(f"host synchronizations in one step: {len(syncs)}", file=sys.stderr)
    for message in sorted(set(syncs)):
        print(f"  {syncs.count(message)} x {message}", file=sys.stderr)


def bench(overrides: list[str], warmup: int, steps: int) -> dict:
    cmd = [sys.executable, "-m", "recframe", "bench", f"bench.warmup_steps={warmup}", f"bench.steps={steps}",
           "hydra.run.dir=/tmp/recframe_profile_bench", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--trace", action="store_true",
                        help="print torch.profiler's top operators (host, and device time on a GPU)")
    parser.add_argument("--graph", action="store_true",
                        help="forward + backward as the step's CUDA graph (the forward phase is the replay)")
    parser.add_argument("--export", metavar="PATH", help="with --trace: also write the profile as a Chrome trace "
                        "(operators' input shapes recorded; kernels matched to their operators without --graph)")
    parser.add_argument("--no-bench", action="store_true", help="skip the `recframe bench` row")
    parser.add_argument("overrides", nargs="+", help="recframe overrides (+experiment=dlrm trainer.accelerator=gpu)")
    args = parser.parse_args()
    trace = args.trace or args.export is not None
    phases = loop(args.overrides, args.warmup, args.steps, trace, args.graph, args.export)
    full = None if args.no_bench else bench(args.overrides, args.warmup, 2 * args.steps)
    print(f"# {' '.join(args.overrides)}; {args.steps} steps; "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}")
    print("| phase | host ms/step | device ms/step |")
    print("|---|---|---|")
    for p in PHASES:
        device = phases[f"{p}_device_ms"]
        print(f"| {p} | {phases[f'{p}_host_ms']:.3f} | {'-' if device is None else f'{device:.3f}'} |")
    print(f"| plain loop, wall | {phases['loop_ms']:.3f} | - |")
    if full is not None:
        print(f"| `recframe bench` (Lightning), wall | {full['step_ms']:.3f} | - |")
        print(f"| framework (bench - loop) | {full['step_ms'] - phases['loop_ms']:.3f} | - |")
        print(f"\nsamples/s: loop {1000 * phases['batch_size'] / phases['loop_ms']:,.0f}, "
              f"recframe bench {full['samples_per_s']:,.0f}")


if __name__ == "__main__":
    main()

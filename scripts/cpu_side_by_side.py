"""The CPU mode of scripts/bench_trainer.py: recframe, a bare loop, plain PyTorch and TorchRec, in rounds.

Every system trains the `dlrm` workload (= torchrec_dlrm.py's defaults: 26 tables x 100,000 x 64, one id per
feature, batch 2048 per process) in its own subprocess. The systems run round-robin ``--rounds`` times, so a
load change on a shared machine falls on all of them alike, and the table gives each system's median samples/s
(with the range over the rounds) and its ratio to TorchRec with the same number of processes: of the medians,
and round by round (median and range of the paired ratios).

Rows, for each process count of ``--devices`` (1 2: both): one `recframe bench` row per ``--recframe-variants``
entry (``NAME=OVERRIDE ...``, as in the GPU mode; ``default``: no overrides), then, with one process, the bare
loop (the same model, optimizer and batches stepped with nothing around them) and plain PyTorch
(``--no-plain`` leaves it out), and TorchRec (``torchrun --nproc_per_node=N``) where ``--torchrec-venv`` is given.

    python scripts/bench_trainer.py --torchrec-venv /tmp/torchrec-venv --devices 1 2 --rounds 3 \\
        --recframe-variants default bf16=trainer.precision=bf16-mixed
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from recframe.openmp_wait import describe


@dataclass
class System:
    """One row: its name, process count, command, and the samples/s and ms/step of each round."""

    name: str
    processes: int
    cmd: list[str]
    samples_per_s: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)

    @property
    def is_torchrec(self) -> bool:
        return self.name.startswith("TorchRec")


def cpu_systems(args: argparse.Namespace, script: Path, anchors: Path | None,
                parse_variant: object) -> list[System]:
    """The rows of the CPU comparison (module docstring), in the order they run in a round.

    Args:
        args: bench_trainer.py's arguments (devices, variants, steps, warmup, overrides, torchrec_venv, no_plain).
        script: bench_trainer.py itself (for the bare loop's subprocess).
        anchors: the folder of plain_torch_dlrm.py / torchrec_dlrm.py (None: no plain PyTorch or TorchRec rows).
        parse_variant: bench_trainer.parse_variant (``NAME=OV ...`` -> name, overrides, paths).
    """
    py, steps = sys.executable, [f"--steps={args.steps}", f"--warmup={args.warmup}"]
    systems = []
    for n in args.devices:
        for variant in args.recframe_variants:
            name, overrides, _ = parse_variant(variant)  # type: ignore[operator]
            systems.append(System(f"recframe bench, {name}", n, [
                py, "-m", "recframe", "bench", "+experiment=dlrm", f"bench.warmup_steps={args.warmup}",
                f"bench.steps={args.steps}", f"trainer.devices={n}", f"hydra.run.dir=/tmp/recframe_bench_{n}",
                *args.overrides, *overrides]))
        if n == 1:
            systems.append(System("bare loop", 1, [py, str(script), "--bare-loop-only", *steps, "--", *args.overrides]))
            if anchors is not None and not args.no_plain:
                systems.append(System("plain PyTorch", 1, [py, str(anchors / "plain_torch_dlrm.py"), *steps]))
        if anchors is not None and args.torchrec_venv is not None:
            systems.append(System("TorchRec", n, [str(args.torchrec_venv / "bin" / "torchrun"), "--standalone",
                                                  f"--nproc_per_node={n}", str(anchors / "torchrec_dlrm.py"), *steps]))
    return systems


def paired_ratios(system: System, anchor: System) -> list[float]:
    """``system``'s samples/s over ``anchor``'s, round by round (the rows of one round ran minutes apart at most).

    Example:
        >>> paired_ratios(System("a", 1, [], [30.0, 20.0]), System("TorchRec", 1, [], [20.0, 20.0]))
        [1.5, 1.0]
    """
    return [a / b for a, b in zip(system.samples_per_s, anchor.samples_per_s, strict=True)]


def render(systems: list[System], args: argparse.Namespace, threads: int, torch_version: str) -> str:
    """The markdown table of the medians, with each row's range, its ratio to TorchRec of the same process count
    (of the medians) and the per-round ratios' median and range (a ratio whose rounds straddle a bar is not a
    result; this VM's speed moves between minutes, TorchRec's most)."""
    anchors = {s.processes: s for s in systems if s.is_torchrec}
    lines = [f"# dlrm workload, batch 2048 per process, {args.steps} timed steps, median of {args.rounds} round(s); "
             f"{platform.processor() or platform.machine()}, {threads} threads ({describe()}, all systems), "
             f"torch {torch_version}, {date.today()}",
             "| processes | system | samples/s | range | ms/step | vs TorchRec | per round: median (range) |",
             "|---|---|---|---|---|---|---|"]
    for s in systems:
        median = statistics.median(s.samples_per_s)
        anchor = anchors.get(s.processes)
        ratio, rounds = "-", "-"
        if anchor is not None:
            ratio = f"{median / statistics.median(anchor.samples_per_s):.2f}x"
            paired = paired_ratios(s, anchor)
            rounds = f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"
        lines.append(f"| {s.processes} | {s.name} | {median:,.0f} | {min(s.samples_per_s):,.0f}-"
                     f"{max(s.samples_per_s):,.0f} | {statistics.median(s.step_ms):.1f} | {ratio} | {rounds} |")
    bare = next((s for s in systems if s.name == "bare loop"), None)
    core = next((s for s in systems if s.processes == 1 and s.name.startswith("recframe")), None)
    if bare and core:
        overhead = statistics.median(bare.samples_per_s) / statistics.median(core.samples_per_s) - 1
        lines.append(f"\nframework overhead (bare loop / {core.name} - 1): {100 * overhead:+.1f}%")
    return "\n".join(lines)


def cpu_comparison(args: argparse.Namespace, script: Path, anchors: Path | None, run: object,
                   parse_variant: object) -> None:
    """Run the rows round-robin ``args.rounds`` times and print the table (module docstring)."""
    import torch

    systems = cpu_systems(args, script, anchors, parse_variant)
    for _ in range(args.rounds):
        for system in systems:
            result = run(system.cmd)  # type: ignore[operator]
            system.samples_per_s.append(float(result["samples_per_s"]))
            system.step_ms.append(float(result["step_ms"]))
    print(render(systems, args, torch.get_num_threads(), torch.__version__), flush=True)

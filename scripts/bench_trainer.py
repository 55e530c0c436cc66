"""Training throughput of `recframe bench` against a bare loop, plain PyTorch and TorchRec, in one run.

Two modes. Without ``--workloads`` (the CPU comparison, scripts/cpu_side_by_side.py): every system
trains the `dlrm` experiment (= torchrec_dlrm.py's defaults) on this machine, round-robin ``--rounds``
times, and the script prints a markdown table: median samples/s and range, ms per step, the ratio to
TorchRec with the same process count, and recframe's framework overhead (Lightning, logging, metrics)
as the bare loop's speed over `recframe bench`'s.

    python scripts/bench_trainer.py                                   # recframe, bare loop, plain PyTorch
    python scripts/bench_trainer.py --torchrec-venv /tmp/torchrec-venv   # + TorchRec (setup_torchrec_venv.sh)
    python scripts/bench_trainer.py --steps 50 -- tables.backend=torch   # extra recframe overrides after --
    python scripts/bench_trainer.py --devices 1 2 --rounds 3 --torchrec-venv /tmp/torchrec-venv \
        --recframe-variants default bf16=trainer.precision=bf16-mixed  # 1 and 2 processes (gloo), 3 rounds

With 2 or more processes recframe trains with ``trainer.devices=N`` (sharding from the planner) and
TorchRec with ``torchrun --nproc_per_node=N``; the bare loop and plain PyTorch are one-process anchors.
samples/s counts all ranks.

The bare loop builds the very same model, optimizer and synthetic batches from the config and
steps them with nothing else around: forward, loss, backward (tables update inside), dense step.

With ``--workloads`` (issue 14's side-by-side, meant for one GPU): for each workload (S, M1,
MLPerf4M; `tiny` for smoke tests) it runs `recframe bench` (the real training path) once per
``--recframe-variants`` entry, plain PyTorch (not for MLPerf4M: its script has no DCN or
multi-hot) and TorchRec (``torchrun --standalone --nproc_per_node=1 torchrec_dlrm.py``; also with
``--tf32`` given ``--torchrec-tf32``), all with uniform ids, each in its own subprocess with a
timeout, and prints ONE markdown table (workload | system | samples/s | ms/step | vs TorchRec)
headed by the card, the torch version and the date. A failing or timed-out row says so in the table
and the run goes on. The core rows (first variant, plain PyTorch, TorchRec) of every workload run
before the extra ones, so a ``--deadline-s`` cut loses extras first.

    # on the GPU machine (scripts/gpu_bench_e2e.sh does this with the carried wheels):
    python3 scripts/bench_trainer.py --workloads S M1 MLPerf4M --python python3 \\
        --recframe-pythonpath $PWD:/tmp/site --torchrec-python python3 \\
        --torchrec-pythonpath /tmp/fbsite:/tmp/trsite:/tmp/site --torchrec-tf32 \\
        --recframe-variants default tf32=trainer.matmul_precision=high bf16=trainer.precision=bf16-mixed \\
        --warmup 20 --steps 100 --out-dir $OUT/bench -- data.pin_memory=true

A variant is ``NAME=OVERRIDE [OVERRIDE ...]`` (one shell word, overrides split at spaces; just
``NAME``: no overrides). A token ``PYTHONPATH=DIR[:DIR]`` in a variant is put in front of that
run's PYTHONPATH instead (e.g. ``'fbgemm=PYTHONPATH=/tmp/fbsite tables.backend=fbgemm'``).
Overrides after ``--`` go to every recframe run. The anchor scripts are read from
../shared/bench or, where only the checkout travels, from the ignored folder .bench/ of the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # recframe from this checkout, as the runs import it
from recframe.openmp_wait import describe, set_default_spin  # noqa: E402 (after the path; imports no torch)

BENCH_DIRS = [ROOT.parent / "shared" / "bench", ROOT / ".bench"]


def bench_dir(explicit: Path | None = None) -> Path:
    """The folder holding plain_torch_dlrm.py and torchrec_dlrm.py: ../shared/bench, else .bench/."""
    for folder in ([explicit] if explicit else BENCH_DIRS):
        if (folder / "torchrec_dlrm.py").is_file() and (folder / "plain_torch_dlrm.py").is_file():
            return folder
    raise SystemExit(f"bench_trainer: no plain_torch_dlrm.py/torchrec_dlrm.py in {explicit or BENCH_DIRS}")


def optional_bench_dir(explicit: Path | None = None) -> Path | None:
    """:func:`bench_dir`, or None where neither folder holds the anchor scripts."""
    try:
        return bench_dir(explicit)
    except SystemExit:
        return None


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

    from recframe.training.builders import build_datamodule, build_model
    from recframe.training.checks import compose_config
    from recframe.training.dense_optimizers import build_dense_optimizer
    from recframe.training.module import dense_parameters
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


# ---------------------------------------------------------------------------------------------------
# --workloads: issue 14's side-by-side on one GPU.


@dataclass(frozen=True)
class Workload:
    """One shape, as recframe overrides and as the anchor scripts' flags (plain: None = no plain row)."""

    description: str
    recframe: list[str]
    torchrec: list[str]
    plain: list[str] | None


def _shape_flags(rows: int, dim: int, batch: int, bottom: str, top: str, tables: int = 26) -> list[str]:
    return [f"--rows={rows}", f"--dim={dim}", f"--tables={tables}", "--pooling=1", f"--batch={batch}",
            f"--bottom={bottom}", f"--top={top}"]


_M1 = _shape_flags(1_000_000, 128, 16384, "512,256,128", "1024,1024,512,256,1")
_TINY = _shape_flags(1000, 16, 256, "32,16", "32,1")
WORKLOADS: dict[str, Workload] = {
    "S": Workload("`dlrm`: 26 x 100k x 64, 1 id/feature, batch 2048, bottom 512-256-64, top 512-256-1",
                  ["+experiment=dlrm"], [], []),
    "M1": Workload("26 x 1M x 128, 1 id/feature, batch 16384, bottom 512-256-128, top 1024-1024-512-256-1",
                   ["+experiment=dlrm", "tables.num_embeddings=1000000", "tables.embedding_dim=128",
                    "data.batch_size=16384", "model.bottom_mlp=[512,256,128]", "model.top_mlp=[1024,1024,512,256]"],
                   _M1, _M1),
    "MLPerf4M": Workload("`mlperf_dcnv2 tables.row_cap=4000000`: MLPerf's 26 tables capped at 4M rows x 128, "
                         "214 ids/sample, DCNv2 (3 x rank 512), batch 8192",
                         ["+experiment=mlperf_dcnv2", "tables.row_cap=4000000"],
                         ["--mlperf", "--rows-cap=4000000", "--dcn=3", "--dim=128", "--batch=8192",
                          "--bottom=512,256,128", "--top=1024,1024,512,256,1"], None),
    "MLPerf204M": Workload("`mlperf_dcnv2` with all 204M rows (~105 GB: one H200), 214 ids/sample, DCNv2, batch 8192",
                           ["+experiment=mlperf_dcnv2", "sharding.topology.memory_per_rank_gb=null"],
                           ["--mlperf", "--dcn=3", "--dim=128", "--batch=8192",
                            "--bottom=512,256,128", "--top=1024,1024,512,256,1"], None),
    "tiny": Workload("smoke test: 26 x 1000 x 16, batch 256, bottom 32-16, top 32-1",
                     ["+experiment=dlrm", "tables.num_embeddings=1000", "tables.embedding_dim=16",
                      "data.batch_size=256", "model.bottom_mlp=[32,16]", "model.top_mlp=[32]"], _TINY, _TINY),
}


@dataclass
class Job:
    """One row of the table: a command run in its own subprocess."""

    workload: str
    system: str
    cmd: list[str]
    env: dict[str, str]
    core: bool  # core rows of every workload run before the extra ones
    is_anchor: bool = False  # the TorchRec fp32 row: the "vs TorchRec" denominator
    result: dict = field(default_factory=dict)
    error: str = ""


def parse_variant(text: str) -> tuple[str, list[str], list[str]]:
    """``NAME=OV1 OV2 PYTHONPATH=DIR`` -> (NAME, [OV1, OV2], [DIR])."""
    name, _, rest = text.partition("=")
    overrides, paths = [], []
    for token in rest.split():
        if token.startswith("PYTHONPATH="):
            paths.append(token.removeprefix("PYTHONPATH="))
        else:
            overrides.append(token)
    if not name:
        raise SystemExit(f"bench_trainer: variant {text!r} has no name")
    return name, overrides, paths


def _env(pythonpath: str | None, extra: list[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    parts = [*extra, *([pythonpath] if pythonpath is not None else [env.get("PYTHONPATH", "")])]
    env["PYTHONPATH"] = ":".join(p for p in parts if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def build_jobs(args: argparse.Namespace, accelerator: str, run_root: Path) -> list[Job]:
    shared = bench_dir(args.bench_dir)
    recframe_path = args.recframe_pythonpath if args.recframe_pythonpath is not None else \
        ":".join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    torchrec_py = args.torchrec_python or (str(args.torchrec_venv / "bin" / "python") if args.torchrec_venv else None)
    timing = [f"--warmup={args.warmup}", f"--steps={args.steps}"]
    jobs: list[Job] = []
    for name in args.workloads:
        w = WORKLOADS[name]
        for i, variant in enumerate(args.recframe_variants):
            vname, overrides, paths = parse_variant(variant)
            cmd = [args.python, "-m", "recframe", "bench", *w.recframe, "data.zipf_exponent=0",
                   f"trainer.accelerator={accelerator}", "trainer.devices=1", f"bench.warmup_steps={args.warmup}",
                   f"bench.steps={args.steps}", f"hydra.run.dir={run_root / f'{name}-{vname}'}",
                   *args.overrides, *overrides]
            jobs.append(Job(name, f"recframe bench ({vname})", cmd, _env(recframe_path, paths), core=i == 0))
        if w.plain is not None and not args.no_plain:
            plain = [args.python, str(shared / "plain_torch_dlrm.py"), *w.plain, *timing]
            jobs.append(Job(name, "plain PyTorch", plain, _env(args.plain_pythonpath), core=True))
        if torchrec_py:
            torchrun = [torchrec_py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                        str(shared / "torchrec_dlrm.py"), *w.torchrec, *timing, f"--emb-opt={args.torchrec_emb_opt}"]
            trenv = _env(args.torchrec_pythonpath)
            jobs.append(Job(name, "TorchRec", torchrun, trenv, core=True, is_anchor=True))
            if args.torchrec_tf32:
                jobs.append(Job(name, "TorchRec (TF32)", [*torchrun, "--tf32"], trenv, core=False))
    order = {n: i for i, n in enumerate(args.workloads)}
    # core rows of every workload first (TorchRec, the first recframe variant, plain), then the extras
    rank = {"TorchRec": 0, "plain PyTorch": 2}
    jobs.sort(key=lambda j: (not j.core, order[j.workload], rank.get(j.system, 1)))
    return jobs


def run_job(job: Job, timeout: float, log_dir: Path | None, index: int) -> None:
    start = time.perf_counter()
    try:
        done = subprocess.run(job.cmd, capture_output=True, text=True, cwd=ROOT, env=job.env, timeout=timeout)
        stdout, stderr, rc = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else expired.stdout or ""
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr or ""
        rc = None
    wall = time.perf_counter() - start
    if log_dir is not None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{index:02d}-{job.workload}-{job.system}").strip("_")
        (log_dir / f"{slug}.log").write_text(f"$ PYTHONPATH={job.env.get('PYTHONPATH', '')} {' '.join(job.cmd)}\n"
                                             f"# rc={rc} wall={wall:.1f}s\n"
                                             f"--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    if rc is None:
        job.error = f"timed out after {timeout:.0f} s"
        return
    try:
        if rc != 0:
            raise RuntimeError
        job.result = last_json_line(stdout)
    except (RuntimeError, ValueError):
        lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.search(r"(Error|Exception|error:|Killed|FAILED)", ln)]
        job.error = f"failed (rc {rc}): {(errors or lines or ['no output'])[-1][:300]}"


def device_header(accelerator: str) -> str:
    import torch

    if accelerator == "gpu" and torch.cuda.is_available():
        card = torch.cuda.get_device_name(0)
    else:
        card = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {describe()}"
    return f"{card}, torch {torch.__version__}, {date.today()}"


def torchrec_versions(args: argparse.Namespace) -> str:
    py = args.torchrec_python or (str(args.torchrec_venv / "bin" / "python") if args.torchrec_venv else None)
    if not py:
        return ""
    code = ("import importlib.metadata as m\nout=[]\nfor n in ('torchrec','fbgemm_gpu','fbgemm_gpu_cpu','torch'):\n"
            "    try: out.append(f'{n} {m.version(n)}')\n    except Exception: pass\nprint(', '.join(out))")
    try:
        done = subprocess.run([py, "-c", code], capture_output=True, text=True, env=_env(args.torchrec_pythonpath),
                              timeout=60)
        return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def render_table(jobs: list[Job], args: argparse.Namespace, header: str, versions: str) -> str:
    lines = [f"# recframe vs plain PyTorch vs TorchRec, one process: {header}",
             f"uniform ids (data.zipf_exponent=0); {args.warmup} warmup + {args.steps} timed steps each"
             + (f"; extra recframe overrides: {' '.join(args.overrides)}" if args.overrides else "")
             + (f"; TorchRec side: {versions}" if versions else ""), ""]
    lines += [f"- {n}: {WORKLOADS[n].description}" for n in args.workloads]
    lines += ["", "| workload | system | samples/s | ms/step | vs TorchRec |", "|---|---|---|---|---|"]
    order = {n: i for i, n in enumerate(args.workloads)}
    # per workload: the recframe variants in their order, then plain PyTorch, TorchRec, TorchRec (TF32)
    shown = {"plain PyTorch": 1, "TorchRec": 2, "TorchRec (TF32)": 3}
    for job in sorted(jobs, key=lambda j: (order[j.workload], shown.get(j.system, 0))):
        anchor = next((j.result.get("samples_per_s") for j in jobs
                       if j.is_anchor and j.workload == job.workload and j.result), None)
        if job.result:
            rate = job.result["samples_per_s"]
            ratio = f"{rate / anchor:.2f}x" if anchor else "-"
            lines.append(f"| {job.workload} | {job.system} | {rate:,.0f} | {job.result['step_ms']:.2f} | {ratio} |")
        else:
            msg = (job.error or "not run").replace("|", "/")
            lines.append(f"| {job.workload} | {job.system} | {msg} | - | - |")
    return "\n".join(lines) + "\n"


def side_by_side(args: argparse.Namespace) -> None:
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"bench_trainer: unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    import torch

    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    log_dir = args.out_dir
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    run_root = Path(tempfile.mkdtemp(prefix="recframe_bench_"))
    jobs = build_jobs(args, accelerator, run_root)
    header = device_header(accelerator)
    versions = torchrec_versions(args)
    deadline = time.perf_counter() + args.deadline_s if args.deadline_s else None
    for index, job in enumerate(jobs):
        timeout = args.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.perf_counter())
            if timeout < 20:
                job.error = "skipped (--deadline-s reached)"
                continue
        t0 = time.perf_counter()
        run_job(job, timeout, log_dir, index)
        outcome = (f"{job.result['samples_per_s']:,.0f} samples/s, {job.result['step_ms']:.2f} ms/step"
                   if job.result else job.error)
        print(f"[{index + 1}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {job.workload} / {job.system}: {outcome}",
              file=sys.stderr, flush=True)
        if log_dir is not None:  # the table so far, in case the whole run is cut short
            (log_dir / "table.md").write_text(render_table(jobs, args, header, versions))
            with (log_dir / "results.jsonl").open("a") as f:
                f.write(json.dumps({"workload": job.workload, "system": job.system, "cmd": job.cmd,
                                    "result": job.result, "error": job.error}) + "\n")
    table = render_table(jobs, args, header, versions)
    if log_dir is not None:
        (log_dir / "table.md").write_text(table)
    print(table, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--devices", type=int, nargs="+", default=[1],
                        help="process counts (CPU: gloo; without --workloads): a row set for each")
    parser.add_argument("--rounds", type=int, default=1, help="round-robin repetitions (CPU mode; the table: medians)")
    parser.add_argument("--torchrec-venv", type=Path, default=None, help="TorchRec venv (setup_torchrec_venv.sh)")
    parser.add_argument("--bench-dir", type=Path, default=None,
                        help="folder of plain_torch_dlrm.py/torchrec_dlrm.py (default: ../shared/bench, else .bench/)")
    parser.add_argument("--bare-loop-only", action="store_true", help=argparse.SUPPRESS)
    add = parser.add_argument_group("side by side (--workloads)").add_argument
    add("--workloads", nargs="+", default=None, help=f"any of {list(WORKLOADS)}")
    add("--recframe-variants", nargs="+", default=["default"],
        help="NAME[=OVERRIDE OVERRIDE ...] per recframe row (the first one is the core row)")
    add("--accelerator", default="auto", choices=["auto", "gpu", "cpu"], help="recframe's trainer.accelerator")
    add("--python", default=sys.executable, help="python of the recframe and plain PyTorch runs")
    add("--recframe-pythonpath", default=None, help="PYTHONPATH of the recframe runs (default: repo:$PYTHONPATH)")
    add("--plain-pythonpath", default=None, help="PYTHONPATH of the plain PyTorch runs (default: $PYTHONPATH)")
    add("--torchrec-python", default=None,
        help="python with torchrec (default: --torchrec-venv's; neither: no TorchRec rows)")
    add("--torchrec-pythonpath", default=None, help="PYTHONPATH of the TorchRec runs (default: $PYTHONPATH)")
    add("--torchrec-tf32", action="store_true", help="also run TorchRec with --tf32")
    add("--torchrec-emb-opt", default="rowwise", choices=["rowwise", "adagrad"])
    add("--no-plain", action="store_true", help="leave out the plain PyTorch rows")
    add("--timeout", type=float, default=300.0, help="seconds per system run")
    add("--deadline-s", type=float, default=0.0, help="skip the runs that would start after this (0: none)")
    add("--out-dir", type=Path, default=None, help="write table.md, results.jsonl and one log per run here")
    parser.add_argument("overrides", nargs="*", help="recframe overrides (after --)")
    args = parser.parse_args()
    set_default_spin()  # every system it starts (recframe, bare loop, plain PyTorch, TorchRec) waits alike
    if args.bare_loop_only:
        print(json.dumps(bare_loop(args.overrides, args.warmup, args.steps)))
    elif args.workloads:
        side_by_side(args)
    else:
        from cpu_side_by_side import cpu_comparison  # scripts/ is on sys.path when this file runs as a script

        cpu_comparison(args, Path(__file__).resolve(), optional_bench_dir(args.bench_dir), run, parse_variant)


if __name__ == "__main__":
    main()

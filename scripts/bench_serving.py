"""Serving exports of one checkpoint side by side: file size, table bytes, validation AUC and predict speed.

For every quantization (none, fp16, int8, int4) it writes the ``exported`` program (and, with
``--aoti``, the AOTInductor package), scores the run's validation rows through it with
``recframe predict``'s code path (reading the data included), times the program alone on the
same rows made into its inputs beforehand, and prints one markdown table; the trained model
scored eagerly (the checkpoint, ``torch`` backend) is the reference row.

    python scripts/bench_serving.py --ckpt outputs/run/checkpoints/step-189 [--aoti] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from recframe.serving.program import ServingModel
from recframe.training.export import export_serving, trained_model
from recframe.training.predict import auc_by_task, load_scorer, predict
from recframe.vocab import ExportFormat, Quantize


def program_inputs(cfg) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:  # noqa: ANN001 (a config)
    """The validation rows as the programs' inputs, made once (so the program alone is timed)."""
    from recframe.training.builders import build_datamodule

    datamodule, keys, out = build_datamodule(cfg), list(cfg.features.sparse), []
    for batch in datamodule.val_dataloader():
        kjt = batch.sparse_features
        kjt = kjt if kjt.keys() == keys else kjt.permute([kjt.keys().index(k) for k in keys])
        out.append((batch.dense_features.float(), kjt.values().long(), kjt.lengths().long().view(len(keys), -1)))
    return out


def score(run, cfg, tasks, inputs) -> tuple[float, float, float, int]:  # noqa: ANN001
    """``(AUC of the first task, predict samples/s, program samples/s, rows)`` of the validation rows."""
    cpu = torch.device("cpu")
    predict(run, cfg, tasks, "val", cpu, progress=False)  # warm-up (an AOTI package loads its kernels)
    start = time.perf_counter()
    columns, _ = predict(run, cfg, tasks, "val", cpu, progress=False)
    seconds = time.perf_counter() - start
    rows = len(columns["row"])
    with torch.no_grad():
        start = time.perf_counter()
        for args in inputs:
            run(*args)
        program_seconds = time.perf_counter() - start
    return next(iter(auc_by_task(columns).values())), rows / seconds, rows / program_seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoints/step-N folder")
    parser.add_argument("--aoti", action="store_true", help="also AOTInductor packages (compiles C++: minutes)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=0, help="predict batch size (0: the run's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg, _, step, _ = trained_model(args.ckpt)
    if args.batch_size:
        cfg.data.batch_size = args.batch_size
    cfg.data.num_workers, cfg.trainer.pipeline = 0, False
    tasks = [t.name for t in getattr(model, "tasks", ())]
    eager = ServingModel(model, list(cfg.features.sparse))
    inputs = program_inputs(cfg)
    auc, speed, program_speed, rows = score(eager, cfg, tasks, inputs)
    lines = [f"checkpoint {args.ckpt} (step {step}, model {cfg.model.name}), {rows} validation rows, batch "
             f"{cfg.data.batch_size}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
             f"threads, torch {torch.__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             "| format | tables | table MB | file MB | val AUC | AUC - fp32 | predict samples/s | program samples/s |",
             "|---|---|---|---|---|---|---|---|",
             f"| eager (trained model) | fp32 | {eager.table_bytes / 1e6:.2f} | - | {auc:.4f} | - | {speed:,.0f} "
             f"| {program_speed:,.0f} |"]
    formats = [ExportFormat.exported, *([ExportFormat.aoti] if args.aoti else [])]
    with tempfile.TemporaryDirectory() as folder:
        for fmt in formats:
            for quantize in Quantize:
                out = Path(folder) / f"{fmt}_{quantize}.pt2"
                meta = export_serving(args.ckpt, out, fmt, quantize)
                run, _, _ = load_scorer(out, torch.device("cpu"))
                q_auc, q_speed, q_program, _ = score(run, cfg, tasks, inputs)
                lines.append(f"| {fmt} | {quantize} | {meta['table_bytes'] / 1e6:.2f} | {out.stat().st_size / 1e6:.2f} "
                             f"| {q_auc:.4f} | {q_auc - auc:+.4f} | {q_speed:,.0f} | {q_program:,.0f} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

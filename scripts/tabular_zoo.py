"""Every CTR model of the zoo on tables of ``scripts/shared_tables.py``, beside the logistic-regression baseline.

For each table folder (``train.csv``, ``val.csv``, ``spec.yaml``), each seed S and each model, trains
``recframe train +experiment=tabular data.path=train.csv data.val_path=val.csv data.spec=spec.yaml model=M
seed=S data.seed=S`` (plus the overrides given) in this process, then fits ``scripts/baseline_lr.py``'s logistic
regression on the same split with the same seeds (``data.seed`` orders the training rows: the baseline moves
with it as much as the models do, so it is compared seed by seed); one JSON line per run goes to ``--out``
(metrics.json's best and last val AUC, the epochs, the wall time), and a Markdown table of the mean best val
AUC over the seeds per model and table is printed at the end.

Example:
    $ python scripts/shared_tables.py --out tables
    $ python scripts/tabular_zoo.py tables/criteo_cat tables/movielens_cat --out zoo.jsonl
    $ python scripts/tabular_zoo.py tables/criteo_cat --models deepfm --seeds 1 --out l.jsonl --set optim.sparse.lr=.05
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_lr import fit  # noqa: E402

from recframe.models import MODELS  # noqa: E402
from recframe.training.app import train_job  # noqa: E402
from recframe.training.checks import check_config, compose_config  # noqa: E402

QUIET = ["trainer.enable_progress_bar=false", "logger.table_stats_every_n_steps=0", "logger.tensorboard=false"]


def table_args(folder: Path) -> list[str]:
    """The data overrides of a table folder."""
    return [f"data.path={folder / 'train.csv'}", f"data.val_path={folder / 'val.csv'}",
            f"data.spec={folder / 'spec.yaml'}"]


def train(folder: Path, model: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    """One training run in this process: metrics.json with the wall time."""
    cfg = compose_config(["+experiment=tabular", *table_args(folder), f"model={model}", f"run_dir={run_dir}", *QUIET,
                          *overrides])
    problems = check_config(cfg)
    if problems:
        raise SystemExit(f"{folder} {model}: {[str(p) for p in problems]}")
    start = time.perf_counter()
    train_job(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**metrics, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="+", type=Path, help="table folders (train.csv, val.csv, spec.yaml)")
    p.add_argument("--models", nargs="*", default=sorted(n for n, e in MODELS.items() if not e.retrieval))
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one per run (appended)")
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2], help="seed=S data.seed=S of every run")
    p.add_argument("--lr-epochs", type=int, default=15, help="the baseline's epochs (0: none; 15: the models' cap)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="recframe train overrides of every model run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as scratch, open(args.out, "a") as out:
        for folder in args.tables:
            for seed in args.seeds:
                seeds = [f"seed={seed}", f"data.seed={seed}"]
                for model in args.models:
                    m = train(folder, model, [*seeds, *args.overrides], Path(scratch) / f"{folder.name}_{model}_{seed}")
                    record = {"table": folder.name, "model": model, "seed": seed, "overrides": args.overrides,
                              "best_val_auc": m.get("best/val/auc"), "last_val_auc": m.get("last/val/auc"),
                              "final_val_auc": m["val/auc"], "best_step": m.get("best/global_step"),
                              "steps": m["global_step"], "seconds": m["seconds"]}
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    rows.setdefault(folder.name, {}).setdefault(model, []).append(m["val/auc"])
                if args.lr_epochs:
                    lr = fit(["+experiment=tabular", *table_args(folder), *seeds], epochs=args.lr_epochs, seed=seed)
                    out.write(json.dumps({"table": folder.name, "model": "logistic_regression", "seed": seed, **lr})
                              + "\n")
                    out.flush()
                    rows[folder.name].setdefault("lr baseline", []).append(lr["best_val_auc"])
    columns = [*args.models, *(["lr baseline"] if args.lr_epochs else [])]
    print(f"mean best val AUC over seeds {args.seeds}")
    print("| table | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{sum(values[c]) / len(values[c]):.4f}" for c in columns) + " |")


if __name__ == "__main__":
    main()

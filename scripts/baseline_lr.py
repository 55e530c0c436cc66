"""A logistic-regression baseline on an experiment's own data and split: val AUC per epoch, and the best.

The model is ``sigmoid(bias + w . dense + sum over sparse features of one learned weight per id)``,
a one-hot logistic regression over the very ids, dense values and rows the experiment trains and
validates on (its data module builds the batches: the same split, ``data.val_path`` included, and the
same ids: hashed by modulo of the table size with ``mapping: modulo``, by vocabulary with ``vocab``),
fitted with Adagrad; one output per task (label column). It says how much the experiment's model adds
over a linear model. The last line is a JSON summary: the best epoch's val AUC (the first task's), the
last epoch's, and the seconds taken.

Example:
    $ python scripts/baseline_lr.py +experiment=movielens data.path=$DATA/movielens_100k
    $ python scripts/baseline_lr.py +experiment=criteo_kaggle data.path=... data.val_fraction=0.2 --epochs 3
    $ python scripts/baseline_lr.py +experiment=tabular data.path=t.csv data.val_path=v.csv data.spec=spec.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recframe.config.resolve import table_configs, tasks  # noqa: E402
from recframe.sparse import Batch  # noqa: E402
from recframe.training.builders import build_datamodule  # noqa: E402
from recframe.training.checks import compose_config  # noqa: E402
from recframe.training.metrics import CTRMetrics  # noqa: E402


class LogisticRegression(nn.Module):
    """One weight per (feature, id, task), one per (dense value, task), and a bias per task.

    Args:
        rows: rows of each sparse feature's table, in KJT key order.
        num_dense: dense inputs.
        num_tasks: outputs (label columns).
    """

    def __init__(self, rows: dict[str, int], num_dense: int, num_tasks: int = 1) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.weights = nn.ModuleDict({k: nn.EmbeddingBag(n, num_tasks, mode="sum") for k, n in rows.items()})
        for bag in self.weights.values():
            nn.init.zeros_(bag.weight)
        self.dense = nn.Linear(num_dense, num_tasks) if num_dense else None
        self.bias = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = self.bias.expand(batch.batch_size, self.num_tasks)
        for key, bag in self.weights.items():
            jt = batch.sparse_features[key]
            logit = logit + bag(jt.values(), jt.offsets()[:-1])
        if self.dense is not None:
            logit = logit + self.dense(batch.dense_features)
        return logit.squeeze(1) if self.num_tasks == 1 else logit


def fit(overrides: list[str], epochs: int = 5, lr: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Fit the baseline on the run config of ``overrides``; print each epoch's val metrics; return the summary.

    Args:
        overrides: ``recframe train`` overrides.
        epochs: passes over the training rows.
        lr: Adagrad's learning rate.
        seed: torch's seed.
    """
    torch.manual_seed(seed)
    start = time.perf_counter()
    cfg = compose_config(overrides)
    source = build_datamodule(cfg).source
    source.setup()
    rows = {f: t.num_embeddings for t in table_configs(cfg) for f in t.feature_names}
    names = [t.name for t in tasks(cfg)]
    model = LogisticRegression({k: rows[k] for k in cfg.features.sparse}, len(cfg.features.dense), len(names))
    history = []
    optimizer = torch.optim.Adagrad(model.parameters(), lr=lr)
    train = source.train_dataset(rank=0, world_size=1, first_batch=0)
    for epoch in range(epochs):
        train.begin_pass()
        for batch in train:
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels).backward()
            optimizer.step()
        metrics = CTRMetrics(task_names=names if len(names) > 1 else None)
        with torch.no_grad():
            for batch in source.val_dataset(rank=0, world_size=1):
                metrics.update(model(batch), batch.labels)
        values = {k: round(float(v), 4) for k, v in metrics.compute().items() if k.endswith(("auc", "logloss", "ne"))}
        print(json.dumps({"epoch": epoch + 1, **values}), flush=True)
        history.append(values["auc" if len(names) == 1 else f"{names[0]}/auc"])
    best = max(range(len(history)), key=lambda e: history[e])
    return {"baseline": "logistic_regression", "best_epoch": best + 1, "best_val_auc": history[best],
            "last_val_auc": history[-1], "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="recframe train overrides (+experiment=..., data.path=...)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(fit(args.overrides, args.epochs, args.lr, args.seed)), flush=True)


if __name__ == "__main__":
    main()

"""A logistic-regression baseline on an experiment's own data and split: val AUC per epoch.

The model is ``sigmoid(bias + w . dense + sum over sparse features of one learned weight per id)``,
a one-hot logistic regression over the very ids, dense values and rows the experiment trains and
validates on (its data module builds the batches), fitted with Adagrad. It says how much the
experiment's model adds over a linear model.

Example:
    $ python scripts/baseline_lr.py +experiment=movielens data.path=../shared/data/movielens_100k
    $ python scripts/baseline_lr.py +experiment=criteo_kaggle data.path=... data.val_fraction=0.2 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recframe.config.resolve import table_configs  # noqa: E402
from recframe.sparse import Batch  # noqa: E402
from recframe.training.builders import build_datamodule  # noqa: E402
from recframe.training.checks import compose_config  # noqa: E402
from recframe.training.metrics import CTRMetrics  # noqa: E402


class LogisticRegression(nn.Module):
    """One weight per (feature, id), one per dense value, and a bias.

    Args:
        rows: rows of each sparse feature's table, in KJT key order.
        num_dense: dense inputs.
    """

    def __init__(self, rows: dict[str, int], num_dense: int) -> None:
        super().__init__()
        self.weights = nn.ModuleDict({k: nn.EmbeddingBag(n, 1, mode="sum") for k, n in rows.items()})
        for bag in self.weights.values():
            nn.init.zeros_(bag.weight)
        self.dense = nn.Linear(num_dense, 1) if num_dense else None

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = torch.zeros(batch.batch_size, 1)
        for key, bag in self.weights.items():
            jt = batch.sparse_features[key]
            logit = logit + bag(jt.values(), jt.offsets()[:-1])
        if self.dense is not None:
            logit = logit + self.dense(batch.dense_features)
        return logit.squeeze(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="recframe train overrides (+experiment=..., data.path=...)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    cfg = compose_config(args.overrides)
    source = build_datamodule(cfg).source
    source.setup()
    rows = {f: t.num_embeddings for t in table_configs(cfg) for f in t.feature_names}
    model = LogisticRegression({k: rows[k] for k in cfg.features.sparse}, len(cfg.features.dense))
    optimizer = torch.optim.Adagrad(model.parameters(), lr=args.lr)
    train = source.train_dataset(rank=0, world_size=1, first_batch=0)
    for epoch in range(args.epochs):
        train.begin_pass()
        for batch in train:
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels).backward()
            optimizer.step()
        metrics = CTRMetrics()
        with torch.no_grad():
            for batch in source.val_dataset(rank=0, world_size=1):
                metrics.update(model(batch), batch.labels)
        values = {k: round(float(v), 4) for k, v in metrics.compute().items() if k in ("auc", "logloss", "ne")}
        print(json.dumps({"epoch": epoch + 1, **values}), flush=True)


if __name__ == "__main__":
    main()

"""Recall@k of ranking by popularity, on movielens_two_tower's own validation batches: the baseline its numbers
are compared with (a model must beat "recommend what most users rated").

Each validation user's held-out item is ranked among the items of its validation batch (the same 256
candidates the two-tower model ranks) by how often each item was rated in the training interactions;
ties count in favour, as in ``recframe.training.metrics.RecallAtK``.

Example:
    $ python recipes/movielens/popularity_baseline.py +experiment=movielens_two_tower \\
        data.path=$DATA/movielens_100k
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recframe.training.builders import build_datamodule  # noqa: E402
from recframe.training.checks import compose_config  # noqa: E402
from recframe.training.metrics import RecallAtK  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="recframe train overrides (+experiment=..., data.path=...)")
    args = parser.parse_args()
    cfg = compose_config(args.overrides)
    source = build_datamodule(cfg).source
    source.setup()
    item = source.columns.ids[:, source.keys.index("item_id")]
    item = item[:, 0] if item.ndim == 2 else item
    counts = np.bincount(item[: source.num_train], minlength=int(item.max()) + 1).astype(np.float64)
    counts[1] = 0.0  # the out-of-vocabulary row stands for items never rated in training
    metric = RecallAtK(ks=list(cfg.model.recall_ks))
    for batch in source.val_dataset(rank=0, world_size=1):
        rows = batch.sparse_features["item_id"].values()
        scores = torch.from_numpy(counts[rows.numpy()]).expand(len(rows), -1)
        metric.update(scores, torch.arange(len(rows)))
    print(json.dumps({f"val/{k}": round(v.item(), 5) for k, v in metric.compute().items()}))


if __name__ == "__main__":
    main()

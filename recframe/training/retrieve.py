"""``recframe retrieve``: the top-k items of every validation user of a two-tower run, from its retrieval export.

    recframe export ckpt=runs/tt/checkpoints/step-936 out=tt_index format=retrieval
    recframe retrieve model=tt_index k=10 out=top10.csv

The user vectors come from ``model/user_tower.pt2`` (a torch.export program), the items from
``model/items.pt``; the search is exact (``recframe.serving.retrieval.top_k``). The users are the
run's validation rows (each user's held-out last item: ``data.KEY=VALUE`` overrides the run's data
settings, e.g. ``data.path=`` where the files moved). ``out`` gets one line per user: ``row``, the
held-out item's id, then ``item_1..item_k`` (item ids, best first) and their scores; the summary
gives recall@k (the held-out item among the k) over the whole catalog, users/s and the catalog size.

Example:
    $ recframe retrieve model=tt_index k=50 out=top50.csv
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recframe.errors import ConfigError

USAGE = "usage: recframe retrieve model=<export folder> out=<file.csv> [k=10] [batch_size=N] [data.KEY=VALUE ...]"
OPTIONS = ("model", "out", "k", "batch_size")


def retrieve_command(args: list[str]) -> int:
    """``recframe retrieve model=FOLDER out=FILE [k=N] [batch_size=N] [data.KEY=VALUE ...]``."""
    from recframe.serving.package import read_program
    from recframe.serving.retrieval import select_keys, top_k
    from recframe.training.builders import build_datamodule
    from recframe.training.command_args import command_options
    from recframe.training.export import saved_run_config
    from recframe.training.files import write_atomic
    from recframe.training.predict import apply_overrides

    parsed = command_options(args, OPTIONS, ("model", "out"), "recframe retrieve", USAGE)
    if parsed is None:
        return 2
    options, overrides = parsed
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    folder, k = Path(options["model"]), int(options.get("k", 10))
    if not (folder / "user_tower.pt2").is_file() or not (folder / "items.pt").is_file():
        raise ConfigError(f"model={folder}: not a retrieval export (user_tower.pt2 and items.pt); write one with "
                          "recframe export ckpt=... out=FOLDER format=retrieval")
    user_tower, meta = read_program(folder / "user_tower.pt2")
    items = torch.load(folder / "items.pt", weights_only=True)
    cfg = saved_run_config(meta["config"])
    apply_overrides(cfg, overrides)
    if "batch_size" in options:
        cfg.data.batch_size = int(options["batch_size"])
    cfg.data.num_workers, cfg.trainer.pipeline = 0, False
    keys = meta["sparse_features"]
    item_of_row = {int(r): i for i, r in enumerate(items["item_rows"].tolist()) if r >= 2}  # OOV/missing rows: none
    start, targets, found, scores = time.perf_counter(), [], [], []
    datamodule = build_datamodule(cfg)
    with torch.no_grad():
        for item in datamodule.val_dataloader():
            batch = datamodule.materialize(item, torch.device("cpu"))
            user = select_keys(batch.sparse_features, keys)
            vectors = user_tower(batch.dense_features.float(), user.values().long(),
                                 user.lengths().long().view(len(keys), -1))
            best, rows = top_k(vectors, items["vectors"], k)
            target = select_keys(batch.sparse_features, ["item_id"]).values().tolist()
            targets += [item_of_row.get(int(r), -1) for r in target]
            found.append(rows)
            scores.append(best)
    seconds = time.perf_counter() - start
    found_rows, score = torch.cat(found).numpy(), torch.cat(scores).numpy()
    ids = items["item_ids"].numpy()
    target_rows = np.array(targets)
    hits = (found_rows == target_rows[:, None]).any(axis=1) & (target_rows >= 0)
    header = ["row", "target_item", *[f"item_{j + 1}" for j in range(k)], *[f"score_{j + 1}" for j in range(k)]]
    lines = [",".join(header)]
    for u in range(len(found_rows)):
        target_id = str(int(ids[target_rows[u]])) if target_rows[u] >= 0 else ""
        lines.append(",".join([str(u), target_id, *(str(int(ids[r])) for r in found_rows[u]),
                               *(f"{s:.6g}" for s in score[u])]))
    out = Path(options["out"])
    write_atomic(out, lambda f: f.write(("\n".join(lines) + "\n").encode()))
    summary = {"users": len(found_rows), "catalog_items": len(ids), f"recall@{k}": round(float(hits.mean()), 6)
               if len(hits) else None, "users_per_s": round(len(found_rows) / seconds, 1) if seconds > 0 else None}
    print(f"recframe retrieve: wrote {out}: {json.dumps(summary)}")
    return 0

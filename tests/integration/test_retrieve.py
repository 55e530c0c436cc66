"""recframe export format=retrieval + recframe retrieve: a two-tower MovieLens run's user tower as a program and the
catalog's item vectors; the exact top-k over the whole catalog equals a brute-force search with the trained model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import run_recframe
from tests.shared_data import MOVIELENS_100K, require


@pytest.mark.slow  # ~50 s on 2 cores
def test_a_two_tower_run_retrieves_from_its_catalog(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["+experiment=movielens_two_tower", f"data.path={require(MOVIELENS_100K)}", "trainer.max_steps=40",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger.tensorboard=false",
            "logger.table_stats_every_n_steps=0", "checkpoint.every_n_steps=40", "trainer.val_check_interval=40"]
    done = run_recframe("train", *args, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = run_dir / "checkpoints" / "step-40"
    index = tmp_path / "index"
    done = run_recframe("export", f"ckpt={folder}", f"out={index}", "format=retrieval", "quantize=int8")
    assert done.returncode == 0, done.stderr[-3000:]
    items = torch.load(index / "items.pt", weights_only=True)
    assert items["vectors"].shape[0] == len(items["item_ids"]) == 1682  # every rated movie of ml-100k
    torch.testing.assert_close(items["vectors"].norm(dim=1), torch.ones(1682))
    done = run_recframe("retrieve", f"model={index}", "k=10", f"out={tmp_path / 'top.csv'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.split(": ", 2)[2])
    assert summary["users"] == 943 and summary["catalog_items"] == 1682
    rows = list(csv.DictReader(open(tmp_path / "top.csv")))
    assert len(rows) == 943

    # brute force with the trained model (fp32 tables): the same items for nearly every user (int8 user tables)
    from recframe.serving.retrieval import select_keys
    from recframe.training.builders import build_datamodule
    from recframe.training.export import trained_model

    model, cfg, _, _, _ = trained_model(folder)
    users = []
    with torch.no_grad():
        for batch in build_datamodule(cfg).val_dataloader():
            users.append(model.encode_users(select_keys(batch.sparse_features, model.user_feature_names)))
    best = (torch.cat(users) @ items["vectors"].T).topk(10, dim=1).indices
    want = [[int(items["item_ids"][r]) for r in row] for row in best.tolist()]
    got = [[int(row[f"item_{j}"]) for j in range(1, 11)] for row in rows]
    same = sum(set(a) == set(b) for a, b in zip(got, want, strict=True))
    assert same >= 0.95 * len(rows), same
    hits = sum(row["target_item"] != "" and row["target_item"] in [row[f"item_{j}"] for j in range(1, 11)]
               for row in rows)
    assert summary["recall@10"] == round(hits / len(rows), 6)

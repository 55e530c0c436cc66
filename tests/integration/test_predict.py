"""recframe predict: every row of an input file scored by an exported model as the trained model scores it, with
labels carried through, malformed rows skipped and counted; the validation rows without input=; option errors."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import run_recframe

QUICK = ["trainer.max_steps=6", "trainer.enable_progress_bar=false", "logger.tensorboard=false",
         "logger.table_stats_every_n_steps=0", "data.batch_size=32", "checkpoint.every_n_steps=6"]


def write_table(path: Path, rows: int, seed: int, bad_line: int | None = None) -> None:
    rng = random.Random(seed)
    lines = ["click,buy,price,user,item"]
    for i in range(rows):
        user, item = rng.randrange(30), rng.randrange(20)
        click = int(rng.random() < 0.2 + 0.5 * (user % 3 == 0))
        label = "yes" if i + 2 == bad_line else str(click)  # line i + 2 (after the header)
        lines.append(f"{label},{int(click and rng.random() < 0.5)},{rng.random() * 9:.2f},u{user},i{item}")
    path.write_text("\n".join(lines) + "\n")


def reference_scores(folder: Path, input_file: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained model's probabilities and the labels of the input's rows (the training path's reader)."""
    from recframe.training.builders import build_datamodule
    from recframe.training.export import trained_model

    model, cfg, _, _, _ = trained_model(folder)
    cfg.data.test_path = str(input_file)
    scores, labels = [], []
    with torch.no_grad():
        for batch in build_datamodule(cfg).test_dataloader():
            scores.append(torch.sigmoid(model(batch)))
            labels.append(batch.labels)
    return torch.cat(scores), torch.cat(labels)


def read_csv(path: Path) -> tuple[list[str], list[list[float]]]:
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], [[float(v) for v in row] for row in rows[1:]]


def test_predict_scores_every_row_of_a_file(tmp_path: Path) -> None:
    write_table(tmp_path / "train.csv", 300, seed=0)
    write_table(tmp_path / "new.csv", 50, seed=1, bad_line=7)
    (tmp_path / "spec.yaml").write_text("label: [click, buy]\ndense: {price: {}}\n"
                                        "categorical: {user: {rows: 50}, item: {rows: 50}}\n")
    run_dir = tmp_path / "run"
    done = run_recframe("train", "+experiment=tabular", f"data.path={tmp_path / 'train.csv'}",
                        f"data.spec={tmp_path / 'spec.yaml'}", *QUICK, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = run_dir / "checkpoints" / "step-6"
    program = tmp_path / "model.pt2"
    done = run_recframe("export", f"ckpt={folder}", f"out={program}", "format=exported", "quantize=int8")
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_recframe("predict", f"model={program}", f"input={tmp_path / 'new.csv'}", f"out={tmp_path / 's.csv'}",
                        "batch_size=16")
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"rows": 49' in done.stdout and '"auc_click"' in done.stdout, done.stdout
    assert "bad_label" in done.stdout + done.stderr  # the skipped line is counted and named
    header, rows = read_csv(tmp_path / "s.csv")
    assert header == ["row", "label_click", "label_buy", "score_click", "score_buy"]
    want, labels = reference_scores(folder, tmp_path / "new.csv")
    got = torch.tensor(rows)
    assert got[:, 0].tolist() == list(range(49))
    assert torch.equal(got[:, 1:3], labels)
    torch.testing.assert_close(got[:, 3:], want, rtol=0, atol=5e-3)  # int8 tables


@pytest.mark.slow
def test_predict_with_an_eager_export_scores_the_validation_rows(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    small = ["+experiment=dlrm", "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8",
             "tables.num_embeddings=1000", "data.num_val_batches=2", "trainer.val_check_interval=6", *QUICK]
    done = run_recframe("train", *small, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    eager = tmp_path / "model.pt"
    assert run_recframe("export", f"ckpt={run_dir / 'checkpoints' / 'step-6'}", f"out={eager}").returncode == 0
    done = run_recframe("predict", f"model={eager}", f"out={tmp_path / 's.csv'}")
    assert done.returncode == 0, done.stderr[-3000:]
    header, rows = read_csv(tmp_path / "s.csv")
    assert header == ["row", "label", "score"] and len(rows) == 64  # 2 validation batches of 32
    import json

    auc = json.loads(done.stdout.split(": ", 1)[1].split(": ", 1)[1])["auc"]
    trained = json.loads((run_dir / "metrics.json").read_text())["val/auc"]
    assert auc == pytest.approx(trained, abs=1e-6)  # the same rows, the same model
    done = run_recframe("predict", f"model={eager}", f"out={tmp_path / 't.csv'}", "input=x.csv", "data.nope=1")
    assert done.returncode == 2 and "data.nope: no such key" in done.stderr
    done = run_recframe("predict", f"model={eager}", f"out={tmp_path / 't.csv'}", "input=x.csv")
    assert done.returncode == 2 and "data.kind=synthetic takes no test file" in done.stderr
    done = run_recframe("predict", f"model={tmp_path / 's.csv'}", f"out={tmp_path / 't.csv'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr

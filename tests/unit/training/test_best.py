"""Early stopping, the best weights restored, metrics.json with the last and the best validation, and a test
file evaluated once (issue 16, items 2 and 3), through ``train_job`` on a small table in this process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from recframe.training.best import BestValidation
from recframe.training.checks import find_problems
from tests.in_process import train_in_process

QUIET = ["trainer.enable_progress_bar=false", "logger.tensorboard=false", "logger.table_stats_every_n_steps=0"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test CSVs whose labels are coin flips: validation AUC wanders, training overfits."""
    folder = tmp_path_factory.mktemp("noise")
    rng = random.Random(1)
    for name, rows in (("train", 256), ("val", 128), ("test", 64)):
        lines = ["label,user,item"] + [f"{rng.randrange(2)},u{rng.randrange(40)},i{rng.randrange(40)}"
                                       for _ in range(rows)]
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    (folder / "spec.yaml").write_text("label: label\ncategorical: {user: {rows: 64}, item: {rows: 64}}\n")
    return folder


def train(tables: Path, run_dir: Path, *overrides: str) -> dict:
    return train_in_process(["+experiment=tabular", f"data.path={tables / 'train.csv'}",
                             f"data.val_path={tables / 'val.csv'}", f"data.spec={tables / 'spec.yaml'}",
                             "data.batch_size=32", "optim.sparse.lr=0.5", *QUIET, *overrides], run_dir)


def test_early_stopping_and_the_best_weights(tables: Path, tmp_path: Path) -> None:
    epochs = ["trainer.max_epochs=12"]
    stopped = train(tables, tmp_path / "stopped", *epochs, "trainer.early_stopping_patience=1",
                    "trainer.restore_best=true", f"data.test_path={tables / 'test.csv'}")
    full = train(tables, tmp_path / "full", *epochs, "trainer.early_stopping_patience=0", "trainer.restore_best=false")
    assert full["global_step"] == 12 * 8 and full["last/global_step"] == 12 * 8
    assert stopped["global_step"] < full["global_step"]  # stopped once the AUC did not improve for a validation
    assert stopped["last/global_step"] == stopped["global_step"] > stopped["best/global_step"]
    # the run ends with the best validation's weights: its final validation is the best one, exactly
    assert stopped["val/auc"] == stopped["best/val/auc"] > stopped["last/val/auc"]
    assert full["val/auc"] == full["last/val/auc"]  # without restore_best: the last weights
    assert full["best/val/auc"] >= full["last/val/auc"]
    assert stopped["data/rows_test"] == 64 and 0.0 <= stopped["test/auc"] <= 1.0  # the test file, evaluated once
    assert "test/auc" not in full


def test_best_follows_the_monitor_and_its_direction() -> None:
    best = BestValidation("val/logloss", restore=False)
    assert best.mode == "min" and best._better(0.5)
    best.best = (10, {"val/logloss": 0.5})
    assert best._better(0.4) and not best._better(0.6) and not best._better(float("nan"))
    assert best.summary() == {"best/global_step": 10, "best/val/logloss": 0.5}


def test_the_settings_are_checked_before_anything_is_built() -> None:
    problems = find_problems(["+experiment=dlrm", "trainer.monitor=auc", "trainer.early_stopping_patience=-1"])
    assert [p.key for p in problems] == ["trainer.early_stopping_patience", "trainer.monitor"]


def test_the_records_travel_in_checkpoints_so_a_resumed_run_continues_them() -> None:
    saved = BestValidation("val/auc", restore=False)
    saved.best, saved.last = (4, {"val/auc": 0.7}), (8, {"val/auc": 0.6})
    resumed = BestValidation("val/auc", restore=False)
    resumed.load_state_dict(saved.state_dict())
    assert resumed.summary() == saved.summary() and not resumed._better(0.65)
    with_weights = BestValidation("val/auc", restore=True)  # the best weights are not saved: its own best only
    with_weights.load_state_dict(saved.state_dict())
    assert with_weights.best is None and with_weights.last == (8, {"val/auc": 0.6})

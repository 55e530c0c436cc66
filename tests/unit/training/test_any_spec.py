"""Every CTR model of the zoo trains from a feature spec alone (issue 16): with and without dense columns, with
one label column and with two (the tasks come from the spec), switched by ``model=`` on top of
``+experiment=tabular``; what cannot work is a config problem naming the key, found before the data is read."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from recframe.models import MODELS
from recframe.models.zoo import CheckContext
from recframe.training.app import train_job
from recframe.training.checks import check_config, compose_config, find_problems

CTR_MODELS = sorted(name for name, entry in MODELS.items() if not entry.retrieval)
QUICK = ["trainer.max_steps=3", "trainer.enable_progress_bar=false", "logger.tensorboard=false",
         "logger.table_stats_every_n_steps=0", "data.batch_size=32"]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-row CSV: two labels, a dense column, two categorical columns and a multi-hot one."""
    folder = tmp_path_factory.mktemp("table")
    rng = random.Random(0)
    rows = ["click,buy,price,user,item,tags"]
    for _ in range(300):
        user, item = rng.randrange(30), rng.randrange(20)
        click = int(rng.random() < 0.2 + 0.5 * (user % 3 == 0))
        rows.append(f"{click},{int(click and rng.random() < 0.5)},{rng.random() * 9:.2f},u{user},i{item},"
                    f"{rng.choice(['a|b', 'c', '', 'b|c'])}")
    (folder / "t.csv").write_text("\n".join(rows) + "\n")
    return folder


def spec(folder: Path, dense: bool, labels: list[str]) -> Path:
    """A spec file of the table: its label column(s), the dense column or none, the categorical columns."""
    path = folder / f"spec_{'dense' if dense else 'nodense'}_{len(labels)}.yaml"
    path.write_text(f"label: [{', '.join(labels)}]\n" + ("dense: {price: {}}\n" if dense else "")
                    + "categorical: {user: {rows: 50}, item: {rows: 50}, tags: {separator: '|', rows: 10}}\n")
    return path


@pytest.mark.parametrize("labels", [["click"], ["click", "buy"]], ids=["one_task", "two_tasks"])
@pytest.mark.parametrize("dense", [False, True], ids=["no_dense", "dense"])
@pytest.mark.parametrize("model", CTR_MODELS)
def test_every_model_trains_from_a_spec(table: Path, tmp_path: Path, model: str, dense: bool,
                                        labels: list[str]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = compose_config(["+experiment=tabular", f"data.path={table / 't.csv'}",
                              f"data.spec={spec(table, dense, labels)}", f"model={model}",
                              f"run_dir={tmp_path}", *QUICK])
        assert check_config(cfg) == []
        assert [t.name for t in cfg.model.tasks] == labels
        train_job(cfg)
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    keys = ["val/auc"] if len(labels) == 1 else [f"val/{name}/auc" for name in labels]
    assert all(math.isfinite(metrics[k]) for k in keys), metrics


def test_what_cannot_work_is_a_config_problem_before_the_data_is_read(table: Path) -> None:
    one_label = spec(table, dense=False, labels=["click"])
    common = [f"data.path={table / 't.csv'}", f"data.spec={one_label}"]
    # the deepfm experiment's two tasks on a table with one label column
    problems = find_problems(["+experiment=deepfm", "data=tabular", "features=from_spec", "tables=from_spec",
                              *common])
    assert [p.key for p in problems] == ["model.tasks"]
    assert "2 tasks ['click', 'purchase'], but the table has 1 label column(s) ['click']" in problems[0].message
    # a retrieval model on click data
    problems = find_problems(["+experiment=tabular", "model=two_tower", *common])
    assert "data" in [p.key for p in problems]
    # DLRM without dense columns: its dot products need one embedding dim for every table
    node = compose_config(["+experiment=tabular", *common]).model
    context = CheckContext(dims={"t_user": 8, "t_item": 16}, sparse_features=["user", "item"], num_dense_features=0)
    problems = MODELS["dlrm"].problems(node, context)
    assert [key for key, _, _ in problems] == ["tables"] and "dot interaction" in problems[0][1]
    assert MODELS["dlrm"].problems(node, CheckContext({"t_user": 8}, ["user"], num_dense_features=0)) == []

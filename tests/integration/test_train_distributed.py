"""`recframe train` with several CPU processes (gloo): sharded tables, DDP dense part, one run directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import TINY, run_recframe, scalars

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

SMALL = ["model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8", "tables.num_embeddings=1000",
         "data.batch_size=64", "data.num_val_batches=2", "trainer.enable_progress_bar=false",
         "trainer.max_steps=6", "trainer.val_check_interval=3"]


@pytest.mark.parametrize("sharding", ["row_wise", "auto"])
def test_two_processes_train_end_to_end(sharding: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=dlrm", *SMALL, "trainer.devices=2", f"sharding={sharding}",
                          f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and 0.0 <= metrics["val/auc"] <= 1.0
    assert metrics["val/num_samples"] == 2 * 2 * 64, "validation covers both ranks' batches"
    plan = json.loads((run_dir / "sharding_plan.json").read_text())["plan"]
    assert plan["world_size"] == 2 and len(plan["tables"]) == 26
    if sharding == "row_wise":
        assert {t["sharding_type"] for t in plan["tables"].values()} == {"row_wise"}
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-6"]
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in (run_dir / "checkpoints" / "step-6").iterdir()}


def test_impossible_plan_fails_before_training(tmp_path: Path) -> None:
    result = run_recframe("train", "+experiment=dlrm", *SMALL, "trainer.devices=2", "tables.num_embeddings=100000000",
                          "sharding.topology.memory_per_rank_gb=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "t_cat_" in result.stderr and "GB" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="torchrun missing")
def test_torchrun_ranks_share_one_run_directory(tmp_path: Path) -> None:
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "recframe", "train",
                             "+experiment=dlrm", *SMALL, "sharding=table_wise"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "torchrun").iterdir())
    assert len(runs) == 1, runs
    assert json.loads((runs[0] / "metrics.json").read_text())["val/num_samples"] == 2 * 2 * 64


@pytest.mark.slow
def test_pipelined_step_gives_the_unpipelined_losses(tmp_path: Path) -> None:
    """trainer.pipeline=true (the next batch's input all-to-all under the current step) == false, bit for bit."""
    losses = {}
    for pipeline in ("true", "false"):
        run_dir = tmp_path / pipeline
        result = run_recframe("train", "+experiment=dlrm", *TINY, "model.bottom_mlp=[16,8]", "model.top_mlp=[16]",
                              "tables.embedding_dim=8", "trainer.devices=2", "sharding=row_wise",
                              "trainer.max_steps=8", "trainer.val_check_interval=3", f"trainer.pipeline={pipeline}",
                              f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
        losses[pipeline] = scalars(run_dir)["train/loss"]
    assert [step for step, _ in losses["true"]] == list(range(8)), losses["true"]
    assert losses["true"] == losses["false"]

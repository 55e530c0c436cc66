"""The ``recframe`` command as users of Hydra and Lightning expect it (issue 18, items 2-5), end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import run_recframe

pytestmark = pytest.mark.integration

SMALL = ["tables.num_embeddings=1000", "data.batch_size=64", "data.num_val_batches=2", "model.bottom_mlp=[16,8]",
         "model.top_mlp=[16]", "tables.embedding_dim=8"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_run_without_a_gpu_is_one_line_before_anything_is_built(tmp_path: Path) -> None:
    result = run_recframe("train", "+experiment=dlrm", "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("recframe train: trainer.accelerator=gpu: no GPU is visible (torch "), last
    assert last.endswith("train on the CPU with trainer=cpu"), last
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "tensorboard").exists()


LOG_LINE = re.compile(r"^\[[^\]]+\]\[([^\]]+)\]\[([A-Z]+)\] - ")
WARNING_LINE = re.compile(r"^\S+\.py:\d+: ")  # how Python shows a warning


def test_a_default_run_prints_recframe_lines_each_warning_once_and_a_bar_with_a_total(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=dlrm", *SMALL, "trainer.max_steps=4", "trainer.val_check_interval=2",
                          "trainer.progress_bar_refresh_steps=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    log_file = (run_dir / "recframe.log").read_text()
    lines = result.stderr.splitlines() + log_file.splitlines()
    info = [(m.group(1), line) for line in lines if (m := LOG_LINE.match(line)) and m.group(2) == "INFO"]
    assert info and all(name == "recframe" or name.startswith("recframe.") for name, _ in info), \
        [line for name, line in info if not name.startswith("recframe")][:5]
    assert "Successfully loaded" not in result.stderr + result.stdout  # fbgemm's INFO lines, one per library
    assert "litlogger" not in result.stderr + result.stdout
    warned = [line for line in result.stderr.splitlines() if WARNING_LINE.match(line)]
    assert len(warned) == len(set(warned)), warned
    assert "IterableDataset" not in result.stderr  # recframe's datasets split over workers: their length is exact
    # the model's size counts the tables: 26 x 1,000 x 8 fp32 (Lightning's summary said only the dense part)
    assert "model dlrm: " in log_file and "26 tables 208.0 K (832.0 KB fp32)" in log_file, log_file
    assert "Epoch 0: 100%" in result.stdout and "4/4 [" in result.stdout  # synthetic data: max_steps is the total
    assert not re.search(r"Epoch \d+: [^\r\n]*/\?", result.stdout), "the epoch's bar has no total"

"""`recframe train +experiment=mlperf_dcnv2 data=criteo_multihot` on a directory of `recframe preprocess
multihot` (made in-process: tests/unit/data/test_multihot.py runs the command): MLPerf's multi-hot layout
trains end to end on CPU and reports the rows it read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recframe.data.multihot import MLPERF_BAG_SIZES, MLPERF_NUM_EMBEDDINGS
from recframe.data.multihot_preprocess import synthetic_blocks, write_multihot
from tests.integration.helpers import run_recframe

pytestmark = pytest.mark.integration


def test_mlperf_dcnv2_trains_on_a_multihot_directory(tmp_path: Path) -> None:
    rows = [min(r, 1000) for r in MLPERF_NUM_EMBEDDINGS]  # ids fit tables.row_cap=1000
    write_multihot(synthetic_blocks(1000, rows, seed=0, zipf_exponent=1.05, block_rows=512), tmp_path / "mh",
                   list(MLPERF_BAG_SIZES), rows, seed=0, source={"kind": "synthetic"}, progress=False)
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=mlperf_dcnv2", "data=criteo_multihot", f"data.path={tmp_path / 'mh'}",
                          "tables.row_cap=1000", "data.batch_size=64", "data.val_fraction=0.064", "trainer.max_steps=3",
                          "trainer.enable_progress_bar=false", "model.top_mlp=[64,32]", "model.bottom_mlp=[32,128]",
                          "model.dcn_low_rank_dim=16", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["data/rows_train"] == 936 and metrics["data/rows_val"] == 64
    assert metrics["val/num_samples"] == 64

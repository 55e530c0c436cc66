"""`recframe plan` end to end: the MLPerf DLRM-DCNv2 plan fits 8 ranks of 80 GB, not one; files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recframe.distributed.plan import ShardingPlan
from tests.integration.helpers import run_recframe, scalars

pytestmark = pytest.mark.integration


def test_mlperf_dcnv2_fits_eight_ranks_of_80_gb(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("plan", "+experiment=mlperf_dcnv2", "world_size=8", f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "8 ranks (1 node x 8), 80.0 GB per rank" in out
    assert "40,000,000 x 128" in out and all(f"t_cat_{i} " in out for i in range(26))
    assert sum(line[:1].isdigit() and "B / 72.00 GB" in line for line in out.splitlines()) == 8  # a line per rank
    saved = json.loads((run_dir / "sharding_plan.json").read_text())
    plan = ShardingPlan.from_dict(saved["plan"])
    assert plan.world_size == 8 and len(plan.tables) == 26
    assert all(r["memory_bytes"] <= r["available_bytes"] for r in saved["ranks"])
    assert sum(t["rows"] for t in saved["tables"]) == 204_184_588
    assert "perf/plan_est_ms/rank_7" in scalars(run_dir)


def test_mlperf_dcnv2_on_one_rank_fails_naming_a_40m_row_table(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("plan", "+experiment=mlperf_dcnv2", "world_size=1", f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("recframe plan: no sharding plan fits") and len(message.splitlines()) == 1
    assert "(40,000,000 x 128 fp32 + rowwise_adagrad state: 20.64 GB) does not fit" in message
    assert "of 72.00 GB for tables per rank" in message
    assert not (run_dir / "sharding_plan.json").exists()


def test_dlrm_row_wise_plan_on_two_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("plan", "+experiment=dlrm", "world_size=2", "sharding=row_wise", "logger.tensorboard=false",
                          f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table_lines = [line for line in result.stdout.splitlines() if line.startswith("t_cat_")]
    assert len(table_lines) == 26 and all(line.split()[1:3] == ["row_wise", "0-1"] for line in table_lines)
    saved = json.loads((run_dir / "sharding_plan.json").read_text())
    assert {p["sharding_type"] for p in saved["plan"]["tables"].values()} == {"row_wise"}
    assert not (run_dir / "tensorboard").exists()


def test_bad_sharding_config_is_reported_before_planning(tmp_path: Path) -> None:
    result = run_recframe("plan", "+experiment=dlrm", "sharding=manual_example", f"hydra.run.dir={tmp_path / 'run'}",
                          timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "recframe plan: the config has 1 problem" in result.stderr and "world_size=2" in result.stderr

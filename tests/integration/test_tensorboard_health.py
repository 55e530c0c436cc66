"""TensorBoard beyond the loss (issue 19, items 2 to 6): table health, final curves, projector, train AUC, the
sparse LR schedule, the logging period of a short run, profiles. The default tier checks the tags on
test_train's 10-step run (``assert_table_health_and_curves``); the slow test here runs its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from recframe.config.schema import ScheduleConfig
from recframe.training.schedule import lr_factor
from tests.integration.helpers import TINY, run_recframe, scalars

pytestmark = pytest.mark.integration


def event_tags(run_dir: Path) -> dict[str, list[str]]:
    """The tags of a run's event file by kind (histograms, images, tensors: text and PR curves), with
    ``pr_curves``: the tags of the PR-curve plugin."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = {kind: list(values) for kind, values in acc.Tags().items() if isinstance(values, list)}
    tags["pr_curves"] = list(acc.PluginTagToContent("pr_curves"))
    tags["text"] = list(acc.PluginTagToContent("text"))
    return tags


def assert_table_health_and_curves(run_dir: Path, projector_table: str) -> None:
    """A run's event file holds the table-health histograms and text, the final PR curve and calibration image;
    its projector folder the config and the metadata of ``projector_table``."""
    tags = event_tags(run_dir)
    assert "tables/t_cat_0/row_norm" in tags["histograms"], tags["histograms"]
    assert "tables/summary/text_summary" in tags["text"], tags["text"]
    assert tags["pr_curves"] == ["val/pr_curve"] and tags["images"] == ["val/calibration"], tags
    board = run_dir / "tensorboard"
    assert f"tensor_name: \"{projector_table}" in (board / "projector_config.pbtxt").read_text()
    (metadata,) = board.glob(f"*/{projector_table}/metadata.tsv")
    lines = metadata.read_text().splitlines()
    assert lines[0] == "id\tlookups" and len(lines) > 1
    counts = [int(line.split("\t")[1]) for line in lines[1:]]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0


@pytest.mark.slow
def test_a_short_run_shows_twenty_points_a_scheduled_sparse_lr_and_a_profile(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("trainer.log_every_n_steps")]  # auto: 40 steps -> every 2
    result = run_recframe("train", "+experiment=dlrm", *tiny, "trainer.max_steps=40", "optim.sparse.lr=0.1",
                          "optim.sparse_schedule.warmup_steps=10", "trainer.profiler=pytorch",
                          "logger.table_stats_every_n_steps=20", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    tags = scalars(run_dir)
    assert [s for s, _ in tags["train/loss"]] == list(range(1, 40, 2))  # 20 points
    assert len(tags["train/auc"]) == 20 and all(0.0 <= v <= 1.0 for _, v in tags["train/auc"])
    cfg = ScheduleConfig(warmup_steps=10)
    for step, lr in tags["optim/lr_sparse"]:
        assert lr == pytest.approx(0.1 * lr_factor(step, cfg)), step
    assert [s for s, _ in tags["tables/t_cat_0/coverage"]] == [20, 40]
    traces = list((run_dir / "profile").glob("*.pt.trace.json"))
    assert traces, sorted(p.name for p in (run_dir / "profile").iterdir()) if (run_dir / "profile").exists() else None

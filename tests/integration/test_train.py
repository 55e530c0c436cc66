"""`recframe train` end to end on CPU: every experiment, run directory contents, resume, bf16, multirun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recframe.config.store import CONFIG_DIR
from tests.integration.helpers import assert_clean_output, run_recframe, scalars
from tests.integration.test_tensorboard_health import assert_table_health_and_curves
from tests.shared_data import experiment_data_args

pytestmark = pytest.mark.integration

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def small_model(experiment: str) -> list[str]:
    """Overrides that shrink an experiment's towers so each run takes seconds."""
    if experiment in ("dlrm", "criteo_kaggle", "tabular"):
        return ["model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8"]
    if experiment in ("dlrm_dcn", "mlperf_dcnv2", "criteo_1tb"):
        return ["model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "model.dcn_low_rank_dim=8", "tables.embedding_dim=8"]
    if experiment in ("deepfm", "wide_deep"):
        return ["model.deep_mlp=[16]", "tables.embedding_dim=8"]
    return []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_few_steps(experiment: str, tiny: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    data_args = experiment_data_args(experiment)
    if data_args:  # file data: its validation set is a part of the file, capped here instead
        tiny = [a.replace("data.num_val_batches=", "trainer.limit_val_batches=") for a in tiny]
    result = run_recframe("train", f"+experiment={experiment}", *small_model(experiment), *tiny, *data_args,
                          "trainer.max_steps=6", "trainer.val_check_interval=3", "checkpoint.every_n_steps=3",
                          f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    main = [k for k in metrics if k.endswith(("/auc", "/recall@10"))]
    assert main and all(0.0 <= metrics[k] <= 1.0 for k in main), metrics
    assert (run_dir / "checkpoints" / "step-6" / "manifest.json").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    tags = scalars(run_dir)
    assert "train/loss" in tags and "perf/samples_per_s" in tags


def test_run_directory_holds_every_scalar(tiny: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=dlrm", *small_model("dlrm"), *tiny, "trainer.max_steps=10",
                          "trainer.val_check_interval=5", "trainer.enable_progress_bar=true",
                          "trainer.progress_bar_refresh_steps=1", "logger.projector.tables=[t_cat_0]",
                          f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_clean_output(result, run_dir, steps=10, size="26 tables 208.0 K (832.0 KB fp32)")  # the output, too
    tags = scalars(run_dir)
    for tag in ("train/loss", "val/auc", "val/ne", "val/logloss", "val/calibration", "val/ctr", "perf/samples_per_s",
                "optim/lr_dense", "optim/lr_sparse", "train/auc", "perf/data_wait_ms", "perf/forward_backward_ms",
                "perf/optimizer_ms", *(f"tables/t_cat_0/{k}" for k in (
                    "row_norm_mean", "row_norm_max", "coverage", "top1pct_share", "momentum1_mean", "momentum1_max"))):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert_table_health_and_curves(run_dir, projector_table="t_cat_0")
    assert [step for step, _ in tags["train/loss"]] == list(range(10))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"val/auc", "val/ne", "val/logloss", "val/calibration", "val/ctr", "global_step"}


def test_resume_continues_exactly(tiny: list[str], tmp_path: Path) -> None:
    common = ["+experiment=dlrm", *small_model("dlrm"), *tiny, "model.dropout=0.2", "trainer.val_check_interval=4",
              "checkpoint.every_n_steps=4", "optim.schedule.warmup_steps=3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = run_recframe("train", *common, "trainer.max_steps=12", f"hydra.run.dir={straight}")
    assert first.returncode == 0, first.stderr[-3000:]
    # The first part ends at step 6, between periodic checkpoints: it resumes from its end-of-run checkpoint, with
    # a larger trainer.max_steps (issue 18: that run stopped at once, "max_epochs=1 reached", at step 6).
    part = run_recframe("train", *common, "trainer.max_steps=6", f"hydra.run.dir={resumed}")
    assert part.returncode == 0, part.stderr[-3000:]
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["step-4", "step-6"]
    rest = run_recframe("train", *common, "trainer.max_steps=12", f"hydra.run.dir={resumed}", "ckpt_path=last")
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert json.loads((resumed / "metrics.json").read_text())["global_step"] == 12, "resumed to a larger max_steps"
    a, b = scalars(straight)["train/loss"], scalars(resumed)["train/loss"]
    assert [s for s, _ in b] == list(range(12)), "the resumed run should continue the same event files"
    assert [v for _, v in a] == [v for _, v in b], "losses after resume must equal the uninterrupted run's"
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())


def test_resume_without_checkpoint_is_a_clear_error(tiny: list[str], tmp_path: Path) -> None:
    result = run_recframe("train", "+experiment=dlrm", *tiny, "ckpt_path=last", f"hydra.run.dir={tmp_path / 'new'}")
    assert result.returncode == 2
    assert "ckpt_path=last" in result.stderr and "hydra.run.dir" in result.stderr


def test_bf16_mixed_precision_trains(tiny: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=dlrm", *small_model("dlrm"), *tiny, "trainer.precision=bf16-mixed",
                          "trainer.max_steps=4", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 4


def test_multirun_sweeps_sparse_lr(tiny: list[str], tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_recframe("train", "-m", "+experiment=dlrm", *small_model("dlrm"), *tiny, "optim.sparse.lr=0.01,0.1",
                          "trainer.max_steps=3", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    lrs = sorted(scalars(r)["optim/lr_sparse"][0][1] for r in runs)
    assert lrs == pytest.approx([0.01, 0.1])


def test_bench_prints_one_json_line(tiny: list[str], tmp_path: Path) -> None:
    result = run_recframe("bench", "+experiment=dlrm", *small_model("dlrm"), *tiny, "bench.warmup_steps=2",
                          "bench.steps=3", f"hydra.run.dir={tmp_path / 'bench'}")
    assert result.returncode == 0, result.stderr[-3000:]
    # stdout is the JSON line alone (`recframe bench ... | jq` works); the log lines are on stderr
    assert len(result.stdout.splitlines()) == 1, result.stdout[-3000:]
    line = json.loads(result.stdout)
    assert line["steps"] == 3 and line["samples_per_s"] > 0 and line["world"] == 1
    assert (line["log_every_n_steps"], line["table_stats_every_n_steps"]) == (1, 5)  # tiny's


def test_bench_logs_at_the_cadence_of_the_run_it_stands_for(tiny: list[str], tmp_path: Path) -> None:
    """auto periods come from the config's max_steps (300: every 15 and 60 steps), not from the bench's 5 steps."""
    result = run_recframe("bench", "+experiment=dlrm", *small_model("dlrm"), *tiny, "bench.warmup_steps=2",
                          "bench.steps=3", "trainer.max_steps=300", "trainer.log_every_n_steps=auto",
                          "logger.table_stats_every_n_steps=auto", f"hydra.run.dir={tmp_path / 'bench'}")
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout)
    assert (line["log_every_n_steps"], line["table_stats_every_n_steps"]) == (15, 60)
    assert "[recframe][INFO]" in result.stderr

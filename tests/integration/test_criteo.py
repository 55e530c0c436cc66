"""`recframe train +experiment=criteo_kaggle` on the real Kaggle sample: AUC, malformed lines
counted or stopped at, and exact resume across epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import run_recframe, scalars
from tests.shared_data import KAGGLE_SAMPLE, require

pytestmark = pytest.mark.integration

QUIET = ["trainer.enable_progress_bar=false"]
FIELDS_OK = ["0", *["1"] * 13, *["68fd1e64"] * 26]


def line_with(index: int, value: str) -> str:
    fields = list(FIELDS_OK)
    fields[index] = value
    return "\t".join(fields)


# (kind, garbage line) in the order they are inserted
GARBAGE = [
    ("short_row", "garbage"),
    ("bad_dense", line_with(3, "abc")),  # I3
    ("long_row", "\t".join(FIELDS_OK + ["extra"])),
    ("bad_label", line_with(0, "2")),
    ("bad_categorical", line_with(18, "zzzzzzzz")),  # C5
    ("short_row", ""),
    ("bad_dense", line_with(1, "1.5")),
]


def with_garbage(tmp_path: Path) -> tuple[Path, dict[str, int], int]:
    """The sample with garbage lines spread through it: (path, counts by kind, line number of the first bad dense)."""
    lines = require(KAGGLE_SAMPLE).read_text().splitlines()
    out, counts, first_dense = [], {}, 0
    for i, line in enumerate(lines):
        if i % 1500 == 700 and i // 1500 < len(GARBAGE):
            kind, garbage = GARBAGE[i // 1500]
            out.append(garbage)
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "bad_dense" and not first_dense:
                first_dense = len(out)
        out.append(line)
    path = tmp_path / "train_with_garbage.txt"
    path.write_text("\n".join(out) + "\n")
    return path, counts, first_dense


@pytest.mark.slow
def test_kaggle_sample_reaches_the_expected_auc(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=criteo_kaggle", f"data.path={require(KAGGLE_SAMPLE)}",
                          "data.val_fraction=0.2", *QUIET, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # a hashed logistic regression gets 0.707 on this split, TorchRec's DLRM 0.725-0.736; we measured 0.736-0.740
    assert metrics["val/auc"] >= 0.72, metrics
    assert metrics["data/skipped_lines"] == 0 and metrics["data/rows_val"] == 2000


def test_kaggle_sample_trains_on_past_garbage_and_counts_it(tmp_path: Path) -> None:
    path, counts, _ = with_garbage(tmp_path)
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=criteo_kaggle", f"data.path={path}", "data.val_fraction=0.2", *QUIET,
                          "trainer.max_steps=10", "trainer.limit_val_batches=2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for kind in ("short_row", "long_row", "bad_label", "bad_dense", "bad_categorical"):
        assert metrics[f"data/skipped_{kind}"] == counts.get(kind, 0), kind
    assert metrics["data/skipped_lines"] == len(GARBAGE)
    assert metrics["data/rows_train"] == 8000 and metrics["data/rows_val"] == 2000  # the same rows as the clean file
    output = result.stdout + result.stderr
    assert f"skipped {len(GARBAGE)} malformed lines (short_row=2, long_row=1, bad_label=1, bad_dense=2, " \
           "bad_categorical=1)" in output
    assert f"{path}:701: 1 tab-separated fields, expected 40" in output
    assert f"{path}:2202: field I3 (field 4 of 40): 'abc' is not an integer" in output
    assert scalars(run_dir)["data/skipped_bad_dense"][-1][1] == 2


def test_on_error_error_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path, _, _ = with_garbage(tmp_path)
    result = run_recframe("train", "+experiment=criteo_kaggle", f"data.path={path}", "data.on_error=error", *QUIET,
                          f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert f"{path}:701: 1 tab-separated fields, expected 40" in result.stderr
    assert "data.on_error=skip" in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_missing_path_is_a_config_problem(tmp_path: Path) -> None:
    result = run_recframe("train", "+experiment=criteo_kaggle", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "data.path: is not set (give the file: data.path=/path/to/train.txt)" in result.stderr


@pytest.mark.slow  # ~45 s; test_train's resume test covers resuming in the default tier
def test_resume_across_epochs_continues_exactly(tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("\n".join(require(KAGGLE_SAMPLE).read_text().splitlines()[:600]) + "\n")
    # 480 training rows, batches of 50: 9 per epoch; 3 epochs = 27 steps; stop after 12 (inside epoch 2)
    common = ["+experiment=criteo_kaggle", f"data.path={small}", "data.val_fraction=0.2", "data.batch_size=50",
              "tables.num_embeddings=100", "tables.embedding_dim=8", "model.bottom_mlp=[8]", "model.top_mlp=[8]",
              "model.dropout=0.2", "checkpoint.every_n_steps=4", "trainer.log_every_n_steps=1",
              "logger.table_stats_every_n_steps=0", *QUIET]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = run_recframe("train", *common, f"hydra.run.dir={straight}")
    assert first.returncode == 0, first.stderr[-3000:]
    part = run_recframe("train", *common, "trainer.max_steps=12", f"hydra.run.dir={resumed}")
    assert part.returncode == 0, part.stderr[-3000:]
    rest = run_recframe("train", *common, f"hydra.run.dir={resumed}", "ckpt_path=last")
    assert rest.returncode == 0, rest.stderr[-3000:]
    a, b = scalars(straight)["train/loss"], scalars(resumed)["train/loss"]
    assert [s for s, _ in a] == list(range(27))
    assert [s for s, _ in b] == list(range(27)), "the resumed run should continue the same event files"
    assert [v for _, v in a] == [v for _, v in b], "losses after resume must equal the uninterrupted run's"
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())


@pytest.mark.slow
def test_preprocessed_directory_trains_with_tables_sized_from_it(tmp_path: Path) -> None:
    from recframe.data.preprocess import preprocess_command

    out = tmp_path / "bin"
    assert preprocess_command(["criteo", "--input", str(require(KAGGLE_SAMPLE)), "--output", str(out),
                               "--vocab-threshold", "20", "--workers", "1", "--quiet"]) == 0
    run_dir = tmp_path / "run"
    result = run_recframe("train", "+experiment=criteo_kaggle", "data=criteo_binary", f"data.path={out}",
                          "tables=criteo_feature_map", "data.val_fraction=0.2", "trainer.max_steps=5",
                          "trainer.limit_val_batches=2", *QUIET, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 5 and metrics["data/rows_train"] == 8000
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "feature_map:" in config  # the sizes were read from the directory's feature_map.json

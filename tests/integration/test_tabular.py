"""`recframe train +experiment=tabular` on a CSV (and a Parquet file) written here from the Criteo Kaggle sample,
through the Criteo feature spec, equals `+experiment=criteo_kaggle` on the same rows: the same losses at every
step and the same validation AUC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import run_recframe, scalars
from tests.shared_data import CRITEO_SPEC, KAGGLE_SAMPLE, criteo_tsv_as_csv, require

pytestmark = pytest.mark.integration

QUIET = ["trainer.enable_progress_bar=false", "logger.table_stats_every_n_steps=0", "checkpoint.every_n_steps=0"]
# criteo_kaggle's data settings, given to the tabular run (the spec leaves mapping and threshold to data.*)
AS_CRITEO_KAGGLE = ["data.id_mapping=vocab", "data.vocab_threshold=20", "trainer.max_epochs=3",
                    "trainer.early_stopping_patience=0", "trainer.restore_best=false"]


def as_parquet(csv_path: Path, out: Path) -> Path:
    """The CSV as Parquet: label and I1..I13 typed by pyarrow (integers, nulls), C1..C26 as strings."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    options = pacsv.ConvertOptions(column_types={f"C{i}": pa.string() for i in range(1, 27)},
                                   strings_can_be_null=True)
    pq.write_table(pacsv.read_csv(csv_path, convert_options=options), out)
    return out


def train(run_dir: Path, *args: str) -> tuple[dict, list[float]]:
    result = run_recframe("train", *args, *QUIET, "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [v for _, v in scalars(run_dir)["train/loss"]]
    return json.loads((run_dir / "metrics.json").read_text()), losses


@pytest.mark.slow  # ~26 s: two training runs on the Criteo sample
def test_tabular_csv_equals_criteo_kaggle_on_the_same_rows(tmp_path: Path) -> None:
    tsv = tmp_path / "head.txt"
    tsv.write_text("\n".join(require(KAGGLE_SAMPLE).read_text().splitlines()[:3000]) + "\n")
    csv_path = criteo_tsv_as_csv(tsv, tmp_path / "head.csv")
    common = ["data.val_fraction=0.2", "trainer.max_epochs=1"]
    criteo, criteo_losses = train(tmp_path / "criteo", "+experiment=criteo_kaggle", f"data.path={tsv}", *common)
    table, table_losses = train(tmp_path / "tabular", "+experiment=tabular", f"data.path={csv_path}",
                                f"data.spec={CRITEO_SPEC}", *AS_CRITEO_KAGGLE, *common)
    assert criteo["global_step"] == table["global_step"] == 2400 // 128
    assert table_losses == criteo_losses
    assert table["val/auc"] == criteo["val/auc"] and table["val/logloss"] == criteo["val/logloss"]
    assert table["data/rows_val"] == criteo["data/rows_val"] == 600


@pytest.mark.slow
def test_whole_sample_as_csv_and_parquet_reaches_criteo_kaggles_auc(tmp_path: Path) -> None:
    csv_path = criteo_tsv_as_csv(require(KAGGLE_SAMPLE), tmp_path / "train.csv")
    parquet = as_parquet(csv_path, tmp_path / "train.parquet")
    common = ["data.val_fraction=0.2"]
    criteo, _ = train(tmp_path / "criteo", "+experiment=criteo_kaggle", f"data.path={KAGGLE_SAMPLE}", *common)
    for path in (csv_path, parquet):
        table, _ = train(tmp_path / path.suffix[1:], "+experiment=tabular", f"data.path={path}",
                         f"data.spec={CRITEO_SPEC}", *AS_CRITEO_KAGGLE, *common)
        assert table["val/auc"] == criteo["val/auc"], path
    assert criteo["val/auc"] >= 0.72

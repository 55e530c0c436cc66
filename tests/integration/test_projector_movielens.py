"""TensorBoard's Projector on a MovieLens run: the item table's most looked-up rows with the movies' ids and titles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import run_recframe
from tests.shared_data import MOVIELENS_100K, require


@pytest.mark.slow  # ~40 s on 2 busy cores; skips without ml-100k
def test_a_movielens_run_shows_its_movies_in_the_projector(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_recframe("train", "+experiment=movielens", f"data.path={require(MOVIELENS_100K)}",
                        "trainer.max_steps=30", "trainer.max_epochs=1", "trainer.val_check_interval=30",
                        "trainer.enable_progress_bar=false", "logger.projector.tables=[t_item_id]",
                        "logger.projector.rows=50", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    config = (run_dir / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "t_item_id" in config and "metadata.tsv" in config
    metadata = next((run_dir / "tensorboard").rglob("metadata.tsv")).read_text().splitlines()
    assert metadata[0].split("\t") == ["id", "lookups", "value"]
    rows = [line.split("\t") for line in metadata[1:]]
    assert len(rows) == 50
    counts = [int(r[1]) for r in rows]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0
    # the most rated movies of ml-100k are looked up most: their titles are there (Star Wars is #1 overall)
    assert any(value.endswith("Star Wars (1977)") for _, _, value in rows), rows[:5]

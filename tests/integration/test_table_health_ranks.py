"""Table health with two CPU ranks (gloo): every table's numbers come from all ranks' shards and batches (issue 19).

Synthetic batch ``i`` depends only on (seed, i), and rank ``r`` of 2 takes the global batches ``r, r + 2, ...``:
after ``s`` steps the two ranks together have seen the batches ``0 .. 2s - 1``, those a one-process run has seen
after ``2s`` steps, so the lookup-count numbers of the two runs are equal. The row-norm and optimizer-state
numbers equal those of the whole tables read back from the run's checkpoint (written at the same step).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recframe.training.checkpoint.reader import load
from tests.integration.helpers import TINY, run_recframe, scalars

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

ARGS = [*TINY, "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8",
        "logger.table_stats_every_n_steps=2"]
TABLES = [f"t_cat_{i}" for i in range(26)]
COUNTED = ("coverage", "top1pct_share")


def train(run_dir: Path, *args: str) -> dict[str, list[tuple[int, float]]]:
    result = run_recframe("train", "+experiment=dlrm", *ARGS, *args, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return scalars(run_dir)


def assert_whole_tables(run_dir: Path, tags: dict[str, list[tuple[int, float]]], step: int) -> None:
    """Every table's row-norm and momentum1 numbers at ``step`` are those of the whole table in the checkpoint."""
    checkpoint, _ = load(str(run_dir / "checkpoints" / f"step-{step}"), None)
    weights, states = checkpoint["state_dict"], checkpoint["sparse_optimizer"]["embeddings"]
    for table in TABLES:
        norms = weights[f"model.embeddings.{table}.weight"].float().norm(dim=1).double()
        momentum = states[table]["momentum1"].double()
        expected = {"row_norm_mean": norms.mean(), "row_norm_max": norms.max(), "momentum1_mean": momentum.mean(),
                    "momentum1_max": momentum.max()}
        for name, value in expected.items():
            assert dict(tags[f"tables/{table}/{name}"])[step] == pytest.approx(value.item(), rel=1e-6), (table, name)


def assert_histograms_count_every_row(run_dir: Path, rows: int) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"histograms": 0})
    acc.Reload()
    for table in TABLES:
        for event in acc.Histograms(f"tables/{table}/row_norm"):
            assert event.histogram_value.num == rows and sum(event.histogram_value.bucket) == rows, table


def test_two_ranks_write_every_table_from_all_shards_and_batches(tmp_path: Path) -> None:
    two = train(tmp_path / "two", "trainer.devices=2", "trainer.max_steps=2")  # sharding=auto: tables on both ranks
    one = train(tmp_path / "one", "trainer.max_steps=4")
    for table in TABLES:
        for name in (*COUNTED, "row_norm_mean", "row_norm_max", "momentum1_mean", "momentum1_max"):
            assert [s for s, _ in two[f"tables/{table}/{name}"]] == [2], (table, name)
        for name in COUNTED:  # the two ranks' batches after s steps: one process's after 2s
            assert [v for _, v in two[f"tables/{table}/{name}"]] == [dict(one[f"tables/{table}/{name}"])[s]
                                                                      for s in (4,)], (table, name)
    assert_whole_tables(tmp_path / "two", two, step=2)
    assert_histograms_count_every_row(tmp_path / "two", rows=1000)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["row_wise", "column_wise", "data_parallel"])
def test_sharding_types_give_the_whole_tables(sharding: str, tmp_path: Path) -> None:
    tags = train(tmp_path / "run", "trainer.devices=2", "trainer.max_steps=2", f"sharding={sharding}")
    assert_whole_tables(tmp_path / "run", tags, step=2)
    assert_histograms_count_every_row(tmp_path / "run", rows=1000)

"""Whole-config validation gathers every owner's checks: config's own, the data source's, the planner's."""

from __future__ import annotations

from recframe.config.compose import find_problems as config_problems
from recframe.training.checks import find_problems

# one problem for each owner: config (a setting's value), data (no data.path), planner (ranks past the world)
ARGS = ["+experiment=dlrm", "data=criteo_tsv", "trainer.val_check_interval=0", "sharding=manual_example",
        "world_size=1"]


def test_every_owner_reports_at_once_config_first() -> None:
    problems = find_problems(ARGS)
    assert [p.key for p in problems] == ["trainer.val_check_interval", "data.path", "sharding.tables"], problems
    assert problems[1].hint == "give the file: data.path=/path/to/train.txt"
    assert problems[2].message == "the manual plan places shards on ranks up to 1, but the world has 1 rank(s)"


def test_config_alone_reads_no_data_and_asks_no_planner() -> None:
    assert [p.key for p in config_problems(ARGS)] == ["trainer.val_check_interval"]

"""logger.table_stats_every_n_steps=auto gives a short run table-health points too; integers and 0 (off) stay."""

from __future__ import annotations

import pytest

from recframe.config.resolve import stats_period
from recframe.training.checks import find_problems


def test_auto_gives_about_five_points_a_run() -> None:
    assert [stats_period("auto", s) for s in (3, 30, 300, 10**6, -1)] == [1, 6, 60, 200, 200]
    assert stats_period("0", 30) == 0 and stats_period(7, 30) == 7


def test_a_bad_period_is_a_config_problem() -> None:
    with pytest.raises(ValueError, match="auto, 0 \\(off\\) or a number of steps"):
        stats_period("often", 100)
    problems = find_problems(["+experiment=dlrm", "logger.table_stats_every_n_steps=often"])
    assert [p.key for p in problems] == ["logger.table_stats_every_n_steps"]

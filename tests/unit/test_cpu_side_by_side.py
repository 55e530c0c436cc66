"""scripts/cpu_side_by_side.py's table: medians, ranges, the ratio of the medians and the per-round paired ratios."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cpu_side_by_side.py"
spec = importlib.util.spec_from_file_location("cpu_side_by_side", SCRIPT)
side = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = side  # dataclasses look their module up
spec.loader.exec_module(side)  # type: ignore[union-attr]


def test_the_table_gives_per_round_ratios_beside_the_ratio_of_medians() -> None:
    """Round 2 was slow for TorchRec only: the ratio of the medians hides it, the per-round range shows it."""
    ours = side.System("recframe bench, default", 1, [], [30.0, 31.0, 29.0], [66.0, 65.0, 68.0])
    theirs = side.System("TorchRec", 1, [], [25.0, 15.0, 24.0], [80.0, 130.0, 84.0])
    alone = side.System("recframe bench, default", 2, [], [20.0], [200.0])  # no TorchRec with 2 processes
    args = argparse.Namespace(steps=30, rounds=3)
    rows = {(line.split("|")[1].strip(), line.split("|")[2].strip()): [c.strip() for c in line.strip("|").split("|")]
            for line in side.render([ours, theirs, alone], args, 2, "2.13").splitlines() if line.startswith("| ")}
    row = rows[("1", "recframe bench, default")]
    assert row[2:] == ["30", "29-31", "66.0", "1.25x", "1.21x (1.20-2.07)"]
    assert rows[("1", "TorchRec")][5:] == ["1.00x", "1.00x (1.00-1.00)"]
    assert rows[("2", "recframe bench, default")][5:] == ["-", "-"]

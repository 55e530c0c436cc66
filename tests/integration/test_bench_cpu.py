"""scripts/bench_trainer.py's CPU mode end to end: rows per variant and process count, run round-robin, one table
of medians (the numbers themselves are recorded in BENCHMARKS.md, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_trainer.py"


@pytest.mark.slow  # ~28 s: six benchmark runs
def test_cpu_mode_rounds_variants_and_the_bare_loop() -> None:
    tiny = [a for a in TINY if not a.startswith("data.num_val")]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "2", "--warmup", "1", "--rounds", "2", "--no-plain",
         "--recframe-variants", "default", "bf16=trainer.precision=bf16-mixed", "--", *tiny],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "median of 2 round(s)" in done.stdout, done.stdout
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in done.stdout.splitlines()
            if line.startswith("| 1 |")]
    assert [row[1] for row in rows] == ["recframe bench, default", "recframe bench, bf16", "bare loop"]
    for row in rows:
        low, high = (float(v.replace(",", "")) for v in row[3].split("-"))
        assert 0 < low <= float(row[2].replace(",", "")) <= high
    assert "framework overhead (bare loop / recframe bench, default - 1)" in done.stdout

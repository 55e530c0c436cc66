"""scripts/bench_trainer.py --workloads runs end to end on CPU: `recframe bench` per variant and plain PyTorch,
one row each in one markdown table; a failing variant is a row that says so, not an aborted run (the numbers
themselves are recorded in BENCHMARKS.md, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_trainer.py"
ANCHORS = [folder for folder in (ROOT.parent / "shared" / "bench", ROOT / ".bench")
           if (folder / "plain_torch_dlrm.py").is_file()]


@pytest.mark.skipif(not ANCHORS, reason="the plain-PyTorch anchor script lives in ../shared/bench next to the "
                                         "repository (or a copy in .bench/); it is not part of the repository")
@pytest.mark.slow  # ~26 s: two benchmark runs
def test_bench_trainer_side_by_side_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--workloads", "tiny", "--steps", "2", "--warmup", "1", "--accelerator", "cpu",
         "--recframe-variants", "default", "broken=model.no_such_key=1", "--timeout", "240",
         "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in done.stdout.splitlines()
            if line.startswith("| tiny |")]
    assert [row[1] for row in rows] == ["recframe bench (default)", "recframe bench (broken)", "plain PyTorch"]
    assert float(rows[0][2].replace(",", "")) > 0 and float(rows[2][3]) > 0
    assert rows[1][2].startswith("failed (rc ")
    assert (tmp_path / "table.md").read_text().strip() == done.stdout.strip()
    assert len(list(tmp_path.glob("*.log"))) == 3

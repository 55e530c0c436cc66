"""scripts/bench_embedding.py runs end to end on CPU: every plain-torch baseline and a recframe backend,
interleaved, one table row each (the numbers themselves are recorded in BENCHMARKS.md, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_embedding.py"


def test_bench_embedding_prints_a_row_per_backend() -> None:
    backends = ["probe", "probe-autograd", "nn", "torch"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--devices", "cpu", "--rows", "500", "--tables", "3", "--dims", "8", "--ids", "2",
         "--batches", "16", "--optimizer", "rowwise_adagrad", "--interleave", "--steps", "2", "--warmup", "1",
         "--backend", *backends],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("cpu ")]
    assert [row[2] for row in rows] == backends
    for row in rows:
        ms, lookups_per_s = float(row[7]), float(row[8])
        assert ms > 0 and lookups_per_s >= 0

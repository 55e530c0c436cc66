"""Helpers for end-to-end runs of the `recframe` command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def run_recframe(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m recframe ARGS` and return the finished process (output captured)."""
    return subprocess.run([sys.executable, "-m", "recframe", *args], capture_output=True, text=True, timeout=timeout)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard event files: tag -> [(step, value)] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


# Small enough for a few seconds of CPU per run, big enough to exercise every part.
TINY = ["tables.num_embeddings=1000", "tables.row_cap=1000", "data.batch_size=64", "data.num_val_batches=2",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "logger.table_stats_every_n_steps=5"]


LOG_LINE = re.compile(r"^\[[^\]]+\]\[([^\]]+)\]\[([A-Z]+)\] - ")
WARNING_LINE = re.compile(r"^\S+\.py:\d+: ")  # how Python shows a warning


def assert_clean_output(result: subprocess.CompletedProcess, run_dir: Path, steps: int, size: str) -> None:
    """A default run's output (issue 18, items 3 and 5): every INFO line is recframe's (none of fbgemm's, none of
    Lightning's, no litlogger tip), no warning twice, the model's size counts the tables (``size``: e.g. ``26 tables
    208.0 K (832.0 KB fp32)``), and the epoch's progress bar (on, redrawn every step) has ``steps`` as its total."""
    log_file = (run_dir / "recframe.log").read_text()
    info = [(m.group(1), line) for line in result.stderr.splitlines() + log_file.splitlines()
            if (m := LOG_LINE.match(line)) and m.group(2) == "INFO"]
    assert info and all(name == "recframe" or name.startswith("recframe.") for name, _ in info), \
        [line for name, line in info if not name.startswith("recframe")][:5]
    assert "Successfully loaded" not in result.stderr + result.stdout  # fbgemm's INFO lines, one per library
    assert "litlogger" not in result.stderr + result.stdout and "GPU available" not in result.stderr + result.stdout
    warned = [line for line in result.stderr.splitlines() if WARNING_LINE.match(line)]
    assert len(warned) == len(set(warned)), warned
    assert "IterableDataset" not in result.stderr  # recframe's datasets split over workers: their length is exact
    assert "model dlrm: " in log_file and size in log_file, log_file  # Lightning's summary counted the dense part only
    assert "Epoch 0: 100%" in result.stderr and f"{steps}/{steps} [" in result.stderr  # the total: max_steps
    assert not re.search(r"Epoch \d+: [^\r\n]*/\?", result.stderr), "the epoch's bar has no total"
    assert "Epoch 0" not in result.stdout and "Validation" not in result.stdout  # stdout holds results only

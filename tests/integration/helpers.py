"""Helpers for end-to-end runs of the `recframe` command."""

from __future__ import annotations

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

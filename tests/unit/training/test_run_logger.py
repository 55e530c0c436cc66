"""RunLogger's writes do not wait for the disk during training (recframe.training.tensorboard)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recframe.training.tensorboard import RunLogger


def test_save_flushes_once_and_finalize_writes_every_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = RunLogger(save_dir=str(tmp_path), name="", version="", default_hp_metric=False)
    writer = logger.experiment
    flushes = []
    flush = writer.flush
    monkeypatch.setattr(writer, "flush", lambda: (flushes.append(1), flush()))
    for step in range(3):  # Lightning calls save after every log_metrics
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        logger.save()
    assert len(flushes) == 1  # the first save only (it writes hparams.yaml): no blocking flush per logging step
    assert (tmp_path / "hparams.yaml").is_file()
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2]
    logger.close()


def test_the_writer_queues_many_events_and_flushes_on_its_own(tmp_path: Path) -> None:
    logger = RunLogger(save_dir=str(tmp_path), name="", version="")
    assert (logger.experiment.max_queue, logger.experiment.flush_secs) == (1000, 10)
    logger.close()


@pytest.mark.parametrize("prefix", ["", "run"])
def test_log_scalars_writes_what_log_metrics_writes(tmp_path: Path, prefix: str) -> None:
    """One event of many values reads back as the scalars that log_metrics' one event per value gives."""
    scalars = {f"tables/t{i}/{name}": value for i in range(3)
               for name, value in (("coverage", i / 7), ("row_norm_max", 1e30 * i), ("top1pct_share", float("nan")))}
    read = []
    for kind in ("log_metrics", "log_scalars"):
        logger = RunLogger(save_dir=str(tmp_path / kind), name="", version="", prefix=prefix)
        for step in (5, 10):
            getattr(logger, kind)({k: v * step for k, v in scalars.items()}, step=step)
        logger.close()
        events = EventAccumulator(str(tmp_path / kind), size_guidance={"scalars": 0})
        events.Reload()
        read.append({tag: [(e.step, str(e.value)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]})
    assert read[0] == read[1] and len(read[0]) == len(scalars)
    assert all(tag.startswith(f"{prefix}-tables/" if prefix else "tables/") for tag in read[0])

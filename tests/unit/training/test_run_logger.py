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

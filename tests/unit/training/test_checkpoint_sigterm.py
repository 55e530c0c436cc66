"""SIGTERM with several ranks: the flags are exchanged every N steps (not every step), at the same step on all ranks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from recframe.training.checkpoint import callback as checkpoint_callback
from recframe.training.checkpoint.callback import StepCheckpoint, Terminated


def test_flags_are_exchanged_every_n_steps_and_a_sigterm_stops_at_the_next_exchange(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_callback.dist, "is_initialized", lambda: True)
    callback = StepCheckpoint(tmp_path, every_n_steps=0, sigterm_check_every_n_steps=4)
    exchanges: list[int] = []
    trainer = SimpleNamespace(world_size=2, global_step=0, max_steps=-1)
    monkeypatch.setattr(callback, "_any_rank_terminating",
                        lambda t: exchanges.append(t.global_step) or callback.terminate_requested)
    saved: list[int] = []
    monkeypatch.setattr(callback, "save", lambda t: saved.append(t.global_step))
    for step in range(1, 10):
        trainer.global_step = step
        if step == 5:
            callback.terminate_requested = True  # the handler ran during step 5
        try:
            callback.on_train_batch_end(trainer, None, None, None, step)  # type: ignore[arg-type]
        except Terminated as stop:
            assert stop.code == 143
            break
    assert exchanges == [4, 8] and saved == [8] and step == 8


def test_the_period_is_checked() -> None:
    with pytest.raises(ValueError, match="sigterm_check_every_n_steps must be >= 1"):
        StepCheckpoint(Path("x"), every_n_steps=0, sigterm_check_every_n_steps=0)

"""SIGTERM with several ranks: the flags are exchanged every N steps (not every step), at the same step on all ranks."""

from __future__ import annotations

import inspect
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from recframe.training.checkpoint import callback as checkpoint_callback
from recframe.training.checkpoint.callback import LIGHTNING_SIGTERM_EXCHANGE, StepCheckpoint, Terminated


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


class EpochLoop:
    """Stands for Lightning's training epoch loop: counts its per-step SIGTERM flag broadcasts."""

    def __init__(self) -> None:
        self.broadcasts = 0

    def _broadcast_sigterm_tensor(self) -> None:
        self.broadcasts += 1


def test_lightnings_per_step_sigterm_broadcast_is_off_while_our_handler_is_installed() -> None:
    """Lightning broadcasts its SIGTERM flag every step (a collective, and a host sync on GPUs); only its own
    handler sets that flag, and ours replaces it during training, so the broadcast is skipped until the end."""
    loop = EpochLoop()
    trainer = SimpleNamespace(world_size=1, global_step=3, max_steps=-1, fit_loop=SimpleNamespace(epoch_loop=loop))
    callback = StepCheckpoint(None, every_n_steps=0)
    before = signal.getsignal(signal.SIGTERM)
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    try:
        assert signal.getsignal(signal.SIGTERM) == callback._on_sigterm
        loop._broadcast_sigterm_tensor()
        assert loop.broadcasts == 0
    finally:
        callback.on_train_end(trainer, None)  # type: ignore[arg-type]
    loop._broadcast_sigterm_tensor()
    assert loop.broadcasts == 1 and signal.getsignal(signal.SIGTERM) == before


def test_lightning_still_broadcasts_its_flag_each_step_under_that_name() -> None:
    """If a Lightning release renames the per-step exchange, the switch-off above would silently miss it."""
    from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop

    assert hasattr(_TrainingEpochLoop, LIGHTNING_SIGTERM_EXCHANGE)
    assert f"self.{LIGHTNING_SIGTERM_EXCHANGE}()" in inspect.getsource(_TrainingEpochLoop.advance)


def test_without_a_root_nothing_is_saved_and_sigterm_still_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    callback = StepCheckpoint(None, every_n_steps=2)
    trainer = SimpleNamespace(world_size=1, global_step=2, max_steps=-1,
                              save_checkpoint=lambda *a, **k: pytest.fail("saved without a root"))
    callback.on_train_batch_end(trainer, None, None, None, 2)  # type: ignore[arg-type]
    callback.terminate_requested = True
    with pytest.raises(Terminated):
        callback.on_train_batch_end(trainer, None, None, None, 3)  # type: ignore[arg-type]

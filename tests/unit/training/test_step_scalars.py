"""StepScalars: per-step training scalars averaged over logging windows, read without a host sync."""

from __future__ import annotations

import pytest
import torch

from recframe.training.step_scalars import StepScalars


def test_windows_average_their_steps_and_keep_their_step() -> None:
    scalars = StepScalars()
    for loss in (1.0, 2.0, 4.0):
        scalars.add({"train/loss": torch.tensor(loss), "train/loss_click": torch.tensor(2 * loss)})
    scalars.close(step=2)
    scalars.add({"train/loss": torch.tensor(8.0), "train/loss_click": torch.tensor(0.0)})
    scalars.close(step=3)
    assert scalars.ready() == [(2, {"train/loss": pytest.approx(7 / 3), "train/loss_click": pytest.approx(14 / 3)}),
                               (3, {"train/loss": 8.0, "train/loss_click": 0.0})]
    assert scalars.ready() == []


def test_an_empty_window_is_not_a_value_and_added_tensors_are_not_changed() -> None:
    scalars = StepScalars()
    scalars.close(step=0)
    assert scalars.ready(wait=True) == []
    loss = torch.tensor(0.5, requires_grad=True) * 1.0
    scalars.add({"train/loss": loss})
    scalars.add({"train/loss": loss})
    scalars.close(step=1)
    assert float(loss.detach()) == 0.5 and scalars.ready() == [(1, {"train/loss": 0.5})]


def test_a_gpu_window_is_handed_out_once_its_copy_arrived(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window copied as from a GPU (a fake event) is held back while the copy travels, handed out (with later
    windows after it) once it arrived, and waited for with ``wait=True`` (the end of training)."""
    from recframe.training.deferred_read import DeferredRead
    from tests.unit.training.test_table_health_deferred import FakeEvent

    events: list[FakeEvent] = []

    def start(tensor: torch.Tensor) -> DeferredRead:
        events.append(FakeEvent())
        return DeferredRead(tensor.clone(), events[-1])

    monkeypatch.setattr(DeferredRead, "start", staticmethod(start))
    scalars = StepScalars()
    for step in (1, 2):
        scalars.add({"train/loss": torch.tensor(float(step))})
        scalars.close(step=step)
    events[1].done = True
    assert scalars.ready() == []  # the oldest window's copy is still travelling: nothing out of order
    events[0].done = True
    assert scalars.ready() == [(1, {"train/loss": 1.0}), (2, {"train/loss": 2.0})]
    scalars.add({"train/loss": torch.tensor(3.0)})
    scalars.close(step=3)
    assert scalars.ready() == [] and scalars.ready(wait=True) == [(3, {"train/loss": 3.0})] and events[2].waited

"""Table health's write read without a host sync: ``DeferredRead`` with a fake CUDA event, and TableHealth logging a
pending write at a later step's end (at the step it was computed), at the next write, or at the end of training."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.training import table_health
from recframe.training.deferred_read import DeferredRead


class FakeEvent:
    """A ``torch.cuda.Event`` whose copy arrives when the test says so (``done``) or when waited for (``waited``: a
    wait that blocked, before the copy arrived)."""

    def __init__(self, fails: bool = False) -> None:
        self.done, self.waited, self.fails = False, False, fails

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        if self.fails:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.waited, self.done = self.waited or not self.done, True


def test_deferred_read_polls_then_waits() -> None:
    event = FakeEvent()
    read = DeferredRead(torch.tensor([1.5, 2.0]), event)
    assert read.deferred and not read.ready() and not event.waited
    event.done = True
    assert read.ready() and not event.waited
    assert DeferredRead(torch.tensor([3.0]), FakeEvent()).tolist() == [3.0]  # not arrived: waits
    assert read.tolist() == [1.5, 2.0]


def test_deferred_read_of_a_cpu_tensor_is_ready_at_once() -> None:
    read = DeferredRead.start(torch.tensor([4, 5]))
    assert not read.deferred and read.ready() and read.tolist() == [4, 5]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[FakeEvent]:
    """Every ``DeferredRead.start`` in table_health behaves as on a GPU: a copy that arrives on a fake event."""
    made: list[FakeEvent] = []

    def start(tensor: torch.Tensor) -> DeferredRead:
        made.append(FakeEvent())
        return DeferredRead(tensor.clone(), made[-1])

    monkeypatch.setattr(table_health.DeferredRead, "start", staticmethod(start))
    return made


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch) -> tuple[table_health.TableHealth, list[tuple[int, list[float]]]]:
    """A TableHealth over one CPU table, every 5 steps, recording what it logs as ``(step, values)``."""
    collection = EmbeddingBagCollection([TableConfig(name="t", num_embeddings=6, embedding_dim=3,
                                                     feature_names=["f"])], SparseOptimizer(), backend="torch")
    monkeypatch.setattr(table_health, "embedding_collections", lambda _: {"ebc": collection})
    callback = table_health.TableHealth(every_n_steps=5, count=False)
    logged: list[tuple[int, list[float]]] = []
    monkeypatch.setattr(callback, "_log", lambda trainer, step, found, values: logged.append((step, values)))
    return callback, logged


MODULE = SimpleNamespace(device=torch.device("cpu"))


def trainer_at(step: int) -> Any:
    return SimpleNamespace(logger=object(), is_global_zero=True, world_size=1, global_rank=0, global_step=step)


def batch_end(callback: table_health.TableHealth, step: int) -> None:
    callback.on_train_batch_end(trainer_at(step), MODULE, None, None, 0)  # type: ignore[arg-type]


def test_a_gpu_write_is_logged_at_the_first_step_end_its_copy_arrived(events: list[FakeEvent], health: Any) -> None:
    callback, logged = health
    batch_end(callback, 5)  # the write: pending, not logged
    assert len(events) == 1 and logged == []
    batch_end(callback, 6)
    assert logged == []  # the copy has not arrived: no wait
    events[0].done = True
    batch_end(callback, 7)
    assert [s for s, _ in logged] == [5] and not events[0].waited
    expected = callback._local_numbers(MODULE)[1].tolist()  # type: ignore[arg-type]
    assert logged[0][1] == pytest.approx(expected)
    batch_end(callback, 8)
    callback.on_train_end(trainer_at(8), MODULE)  # type: ignore[arg-type]
    assert len(logged) == 1


@pytest.mark.parametrize("hook", ["on_train_end", "on_fit_end", "teardown", "on_exception"])
def test_training_end_waits_for_a_pending_write(events: list[FakeEvent], health: Any, hook: str) -> None:
    callback, logged = health
    batch_end(callback, 10)
    extra = {"teardown": ("fit",), "on_exception": (RuntimeError("stop"),)}.get(hook, ())
    getattr(callback, hook)(trainer_at(11), MODULE, *extra)
    assert [s for s, _ in logged] == [10] and events[0].waited
    callback.on_train_end(trainer_at(11), MODULE)  # type: ignore[arg-type]
    callback.teardown(trainer_at(11), MODULE, "fit")  # type: ignore[arg-type]
    assert len(logged) == 1  # logged once


def test_a_new_write_logs_the_pending_one_first(events: list[FakeEvent], health: Any) -> None:
    callback, logged = health
    batch_end(callback, 5)
    batch_end(callback, 10)
    assert [s for s, _ in logged] == [5] and events[0].waited and not events[1].waited
    callback.on_train_end(trainer_at(10), MODULE)  # type: ignore[arg-type]
    assert [s for s, _ in logged] == [5, 10]


def test_a_failed_device_drops_the_pending_write_with_a_warning(monkeypatch: pytest.MonkeyPatch, health: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(table_health.DeferredRead, "start",
                        staticmethod(lambda tensor: DeferredRead(tensor, FakeEvent(fails=True))))
    callback, logged = health
    batch_end(callback, 5)
    callback.on_exception(trainer_at(6), MODULE, RuntimeError("CUDA error"))  # type: ignore[arg-type]
    assert logged == [] and "summaries of step 5 are lost" in caplog.text
    callback.on_train_end(trainer_at(6), MODULE)  # type: ignore[arg-type]
    assert logged == []


def test_a_cpu_write_is_logged_at_once(health: Any) -> None:
    callback, logged = health
    batch_end(callback, 5)
    assert [s for s, _ in logged] == [5]


def test_with_several_ranks_rank_zero_defers_its_merged_numbers(monkeypatch: pytest.MonkeyPatch,
                                                                events: list[FakeEvent], health: Any) -> None:
    callback, logged = health
    merged = ([("t", (6, 3), [])], torch.tensor([1.0, 2.0]))
    monkeypatch.setattr(table_health, "merged_numbers", lambda *a: merged)
    for rank in (1, 0):
        trainer = SimpleNamespace(logger=object(), is_global_zero=rank == 0, global_rank=rank)
        callback.write_merged(trainer, MODULE, 5)  # type: ignore[arg-type]
    assert len(events) == 1 and logged == []  # rank 1 keeps nothing; rank 0 waits for its copy
    events[0].done = True
    batch_end(callback, 6)
    assert logged == [(5, [1.0, 2.0])]

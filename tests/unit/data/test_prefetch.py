"""The prefetcher's lookahead and per-batch callback on the CPU, and the data module's training hook."""

from __future__ import annotations

import torch

from recframe.data.prefetch import DevicePrefetcher
from recframe.data.source import SyntheticSource
from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.sparse import Batch
from recframe.training.datamodule import RecDataModule

CPU = torch.device("cpu")


def module(pipeline: bool) -> RecDataModule:
    source = SyntheticSource(SyntheticCriteo(SyntheticConfig(table_sizes=(10,) * 3), seed=0), batch_size=8,
                             num_val_batches=2)
    return RecDataModule(source, pipeline=pipeline)


def test_the_next_item_is_ready_and_called_back_when_one_is_handed_out() -> None:
    made, ready = [], []

    def materialize(item: int, device: torch.device) -> torch.Tensor:
        made.append(item)
        return torch.tensor([item], device=device)

    fetch = DevicePrefetcher([1, 2, 3], CPU, materialize, on_ready=lambda t: ready.append(int(t)))
    seen = []
    for t in fetch:
        seen.append((int(t), list(made), list(ready)))
    assert seen == [(1, [1, 2], [1, 2]), (2, [1, 2, 3], [1, 2, 3]), (3, [1, 2, 3], [1, 2, 3])]


def test_training_batches_reach_the_registered_callback_one_step_ahead() -> None:
    dm = module(pipeline=True)
    ready: list[Batch] = []
    dm.on_train_batch_ready(ready.append)
    loader = dm.train_dataloader()
    assert isinstance(loader, DevicePrefetcher)
    batches = iter(loader)
    first = next(batches)
    assert [b is first for b in ready] == [True, False] and ready[1].batch_size == 8
    second = next(batches)
    assert second is ready[1], "the callback saw the very batch handed out next"
    assert dm.transfer_batch_to_device(second, CPU, 0) is second, "a batch on the device is not copied again"
    assert not isinstance(dm.val_dataloader(), DevicePrefetcher), "validation batches never reach the callback"


def test_without_pipeline_or_callback_the_cpu_loader_is_the_plain_one() -> None:
    off = module(pipeline=False)
    off.on_train_batch_ready(lambda batch: None)
    assert not isinstance(off.train_dataloader(), DevicePrefetcher)
    assert not isinstance(module(pipeline=True).train_dataloader(), DevicePrefetcher)

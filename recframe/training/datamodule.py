"""RecDataModule: the LightningDataModule that feeds Batches to training and validation.

Batches come from a data source (``recframe.data.source.DataSource``): the endless synthetic stream
(``SyntheticSource``) or finite files read in epochs (``recframe.data.sources``). The training
stream is split over ranks; its position (how many batches each rank consumed, one per optimizer
step) is saved in checkpoints through ``state_dict`` so that a resumed run continues with the next
unseen batch: for the endless stream that is batch ``consumed``, for finite data epoch
``consumed // batches_per_epoch`` and the batch after ``consumed % batches_per_epoch`` in it. The
validation set is fixed and disjoint from training. ``report()`` says what the source read and
skipped (``metrics.json`` and TensorBoard get it).

On a GPU, synthetic batches are made on the device (``generate_on``: the DataLoader yields only
batch requests, ``recframe.data.synthetic_device`` makes them), and with ``pipeline`` the next batch
is copied or made on a side stream while the current step runs (``recframe.data.prefetch``). The
training side may register a callback for the next training batch (``on_train_batch_ready``: a
sharded model starts its input all-to-all there); with ``pipeline`` the training loader then looks
one batch ahead on every device and calls it. This module knows nothing of what the callback does.

Example:
    >>> from recframe.data.source import SyntheticSource
    >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
    >>> source = SyntheticSource(SyntheticCriteo(SyntheticConfig(table_sizes=(100,) * 3), seed=0),
    ...                          batch_size=8, num_val_batches=2)
    >>> dm = RecDataModule(source)
    >>> next(iter(dm.val_dataloader())).batch_size
    8
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from recframe.data.arrays import EpochBatches, EpochLoader
from recframe.data.prefetch import DevicePrefetcher, OnReady
from recframe.data.source import DataSource, SyntheticSource
from recframe.data.synthetic import SyntheticCriteo
from recframe.data.synthetic_dataset import BatchRequest
from recframe.data.synthetic_retrieval import SyntheticRetrieval
from recframe.sparse import Batch

log = logging.getLogger(__name__)


class RecDataModule(pl.LightningDataModule):
    """Training stream + fixed validation set from a data source.

    Args:
        source: where batches come from.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches for faster copies to a GPU.
        pipeline: on a GPU, copy (or make) the next batch on a side stream while the current step runs;
            on any device, run the callback registered by ``on_train_batch_ready`` on the next
            training batch while the current step runs.
    """

    def __init__(self, source: DataSource, num_workers: int = 0, pin_memory: bool = False,
                 pipeline: bool = True) -> None:
        super().__init__()
        self.source = source
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.pipeline = pipeline
        self.train_batches_consumed = 0
        self._ready = False
        self._requests = False
        self.device: torch.device | None = None  # the training device outside a Trainer (a plain loop)
        self._train_batch_ready: OnReady | None = None

    @property
    def generator(self) -> SyntheticCriteo | SyntheticRetrieval:
        """The synthetic generator (synthetic sources only)."""
        if not isinstance(self.source, SyntheticSource):
            raise AttributeError(f"a {type(self.source).__name__} has no synthetic generator")
        return self.source.generator

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _device(self) -> torch.device:
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device
        return self.device if self.device is not None else torch.device("cpu")

    def _place_source(self) -> None:
        """Synthetic sources: decide whether batches are made on the training device (logged once)."""
        if not isinstance(self.source, SyntheticSource):
            return
        device = self._device()
        requests = self.source.place(device)
        if requests and not self._requests and self._rank_and_world()[0] == 0:
            unused = f"; data.num_workers={self.num_workers} is not needed" if self.num_workers else ""
            log.info("synthetic batches are made on %s%s", device, unused)
        self._requests = requests

    def on_train_batch_ready(self, callback: OnReady | None) -> None:
        """Register what to run on each training batch one step ahead, on the device (with ``pipeline``).

        Loaders made afterwards call it (``train_dataloader``); validation batches never reach it.

        Args:
            callback: called with the next training batch while the current one is trained on;
                None removes it.

        Example:
            >>> dm.on_train_batch_ready(lambda batch: print(batch.batch_size))  # doctest: +SKIP
        """
        self._train_batch_ready = callback

    def materialize(self, item: Any, device: torch.device) -> Any:
        """A loader's item as a batch on ``device``: a request is made there, a host batch is copied.

        A Batch already on ``device`` (materialized by the prefetching pipeline) is returned as it
        is: the same object, as a callback saw it.
        """
        if isinstance(item, BatchRequest):
            assert isinstance(self.source, SyntheticSource)
            return self.source.make(item, device)
        if isinstance(item, Batch) and item.labels.device == device:
            return item
        return item.to(device, non_blocking=device.type == "cuda")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Lightning's hook: batches of the prefetching pipeline are already there; others are copied or made."""
        return self.materialize(batch, device)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self.source.setup()
        self._ready = True
        summary = self.source.summary()
        if summary and self._rank_and_world()[0] == 0:
            log.info("%s", summary)

    def _loader(self, dataset: IterableDataset, on_ready: OnReady | None = None) -> DataLoader | DevicePrefetcher:
        if isinstance(dataset, EpochBatches):  # workers start per epoch, after the epoch is known
            loader: DataLoader = EpochLoader(dataset, batch_size=None, num_workers=self.num_workers,
                                             pin_memory=self.pin_memory)
        else:
            workers = 0 if self._requests else self.num_workers  # requests cost nothing to make
            loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                                pin_memory=self.pin_memory and not self._requests, persistent_workers=workers > 0)
        device = self._device()
        if self.pipeline and (device.type == "cuda" or on_ready is not None):
            return DevicePrefetcher(loader, device, self.materialize, on_ready)
        return loader

    def train_dataloader(self) -> DataLoader | DevicePrefetcher:
        self.setup()
        self._place_source()
        rank, world = self._rank_and_world()
        return self._loader(self.source.train_dataset(rank, world, self.train_batches_consumed),
                            self._train_batch_ready)

    def val_dataloader(self) -> DataLoader | DevicePrefetcher:
        self.setup()
        self._place_source()
        rank, world = self._rank_and_world()
        return self._loader(self.source.val_dataset(rank, world))

    def test_dataloader(self) -> DataLoader | DevicePrefetcher | None:
        """The test set's loader (``data.test_path``: evaluated once after training), or None without one."""
        self.setup()
        self._place_source()
        dataset = self.source.test_dataset(*self._rank_and_world())
        return self._loader(dataset) if dataset is not None else None

    def report(self) -> dict[str, float]:
        """What the source read and skipped (empty for synthetic data)."""
        self.setup()
        return self.source.report()

    def state_dict(self) -> dict[str, Any]:
        """The data position: training batches consumed by each rank (one per optimizer step)."""
        trainer = self.trainer
        consumed = trainer.global_step if trainer is not None else self.train_batches_consumed
        return {"train_batches_consumed": int(consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_batches_consumed = int(state_dict["train_batches_consumed"])

"""RecDataModule: the LightningDataModule that feeds Batches to training and validation.

Batches come from a data source (``DataSource``): the endless synthetic stream
(``SyntheticSource``) or finite files read in epochs (``recframe.data.sources``). The training
stream is split over ranks; its position (how many batches each rank consumed, one per optimizer
step) is saved in checkpoints through ``state_dict`` so that a resumed run continues with the next
unseen batch: for the endless stream that is batch ``consumed``, for finite data epoch
``consumed // batches_per_epoch`` and the batch after ``consumed % batches_per_epoch`` in it. The
validation set is fixed and disjoint from training. ``report()`` says what the source read and
skipped (``metrics.json`` and TensorBoard get it).

Example:
    >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
    >>> source = SyntheticSource(SyntheticCriteo(SyntheticConfig(table_sizes=(100,) * 3), seed=0),
    ...                          batch_size=8, num_val_batches=2)
    >>> dm = RecDataModule(source)
    >>> next(iter(dm.val_dataloader())).batch_size
    8
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import pytorch_lightning as pl
from torch.utils.data import DataLoader, IterableDataset

from recframe.data.arrays import EpochBatches, EpochLoader
from recframe.data.synthetic import SyntheticCriteo, SyntheticDataset, SyntheticRetrieval

log = logging.getLogger(__name__)

# Validation batches are drawn from this batch index on: far from any training position. A multiple
# of every world size up to 16 (720720 = lcm(1..16)), so that N ranks with num_val_batches / N each
# validate on the same global batches as one rank (``recframe eval`` on another world size).
VALIDATION_FIRST_BATCH = 720720 << 20


class DataSource(Protocol):
    """Where a RecDataModule's batches come from."""

    def setup(self) -> None:
        """Read what is needed (idempotent); called on every rank before the first loader."""

    def train_dataset(self, rank: int, world_size: int, first_batch: int) -> IterableDataset:
        """This rank's training batches from position ``first_batch`` (batches it consumed)."""

    def val_dataset(self, rank: int, world_size: int) -> IterableDataset:
        """This rank's validation batches."""

    def report(self) -> dict[str, float]:
        """Numbers about the data read (rows, skipped lines by kind) for metrics.json and TensorBoard."""

    def summary(self) -> str:
        """One log paragraph about the data read (what was skipped, and where)."""


class SyntheticSource:
    """The synthetic generators as a data source: an endless training stream, a fixed validation set.

    Args:
        generator: makes batch ``i`` from ``(seed, i)``.
        batch_size: samples per batch per rank.
        num_val_batches: batches in the validation set (per rank).
    """

    def __init__(self, generator: SyntheticCriteo | SyntheticRetrieval, batch_size: int, num_val_batches: int) -> None:
        self.generator = generator
        self.batch_size = batch_size
        self.num_val_batches = num_val_batches

    def setup(self) -> None:
        pass

    def train_dataset(self, rank: int, world_size: int, first_batch: int) -> IterableDataset:
        return SyntheticDataset(self.generator, self.batch_size, num_batches=None, rank=rank, world_size=world_size,
                                first_batch=first_batch)

    def val_dataset(self, rank: int, world_size: int) -> IterableDataset:
        return SyntheticDataset(self.generator, self.batch_size, num_batches=self.num_val_batches, rank=rank,
                                world_size=world_size, first_batch=VALIDATION_FIRST_BATCH // world_size)

    def report(self) -> dict[str, float]:
        return {}

    def summary(self) -> str:
        return ""


class RecDataModule(pl.LightningDataModule):
    """Training stream + fixed validation set from a data source.

    Args:
        source: where batches come from.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches for faster copies to a GPU.
    """

    def __init__(self, source: DataSource, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        self.source = source
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_batches_consumed = 0
        self._ready = False

    @property
    def generator(self) -> SyntheticCriteo | SyntheticRetrieval:
        """The synthetic generator (synthetic sources only)."""
        if not isinstance(self.source, SyntheticSource):
            raise AttributeError(f"a {type(self.source).__name__} has no synthetic generator")
        return self.source.generator

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self.source.setup()
        self._ready = True
        summary = self.source.summary()
        if summary and self._rank_and_world()[0] == 0:
            log.info("%s", summary)

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        if isinstance(dataset, EpochBatches):  # workers start per epoch, after the epoch is known
            return EpochLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory)
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_and_world()
        return self._loader(self.source.train_dataset(rank, world, self.train_batches_consumed))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_and_world()
        return self._loader(self.source.val_dataset(rank, world))

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

"""RecDataModule: the LightningDataModule that feeds Batches to training and validation.

The training stream is split over ranks; its position (how many batches each rank consumed) is
saved in checkpoints through ``state_dict`` so that a resumed run continues with the next unseen
batch. The validation set is fixed and disjoint from training.

Example:
    >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
    >>> dm = RecDataModule(SyntheticCriteo(SyntheticConfig(table_sizes=(100,) * 3), seed=0),
    ...                    batch_size=8, num_val_batches=2)
    >>> next(iter(dm.val_dataloader())).batch_size
    8
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from recframe.data.synthetic import SyntheticCriteo, SyntheticDataset, SyntheticRetrieval

# Validation batches are drawn from this batch index on: far from any training position.
VALIDATION_FIRST_BATCH = 1 << 40


class RecDataModule(pl.LightningDataModule):
    """Training stream + fixed validation set from a batch generator.

    Args:
        generator: makes batch ``i`` from ``(seed, i)`` (synthetic data).
        batch_size: samples per batch per rank.
        num_val_batches: batches in the validation set (per rank).
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches for faster copies to a GPU.
    """

    def __init__(self, generator: SyntheticCriteo | SyntheticRetrieval, batch_size: int, num_val_batches: int,
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        self.generator = generator
        self.batch_size = batch_size
        self.num_val_batches = num_val_batches
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_batches_consumed = 0

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: SyntheticDataset) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        return self._loader(SyntheticDataset(self.generator, self.batch_size, num_batches=None, rank=rank,
                                             world_size=world, first_batch=self.train_batches_consumed))

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        first = VALIDATION_FIRST_BATCH // world
        return self._loader(SyntheticDataset(self.generator, self.batch_size, num_batches=self.num_val_batches,
                                             rank=rank, world_size=world, first_batch=first))

    def state_dict(self) -> dict[str, Any]:
        """The data position: training batches consumed by each rank (one per optimizer step)."""
        trainer = self.trainer
        consumed = trainer.global_step if trainer is not None else self.train_batches_consumed
        return {"train_batches_consumed": int(consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_batches_consumed = int(state_dict["train_batches_consumed"])

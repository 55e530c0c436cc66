"""Where a RecDataModule's batches come from: the ``DataSource`` protocol and the synthetic source.

A data source knows no trainer: it gives each rank its training batches from a position (the
batches that rank consumed, saved in checkpoints) and its validation batches, and says what it
read and skipped. ``recframe.training.datamodule.RecDataModule`` turns one into Lightning's
loaders. The file sources (``recframe.data.sources``, ``binary``, ``multihot``, ``movielens``,
``tabular``) follow the same protocol.

Example:
    >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
    >>> source = SyntheticSource(SyntheticCriteo(SyntheticConfig(table_sizes=(100,) * 3), seed=0),
    ...                          batch_size=8, num_val_batches=2)
    >>> [batch.batch_size for batch in source.val_dataset(rank=0, world_size=1)]
    [8, 8]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch.utils.data import IterableDataset

from recframe.config.resolve import feature_rows, tasks
from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_dataset import BatchRequest, SyntheticDataset
from recframe.data.synthetic_device import DeviceSynthesizer
from recframe.data.synthetic_retrieval import SyntheticRetrieval, SyntheticRetrievalConfig
from recframe.registry import Registry
from recframe.vocab import GenerateOn

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

    def test_dataset(self, rank: int, world_size: int) -> IterableDataset | None:
        """This rank's test batches (``data.test_path``), evaluated once after training; None without a test set."""

    def report(self) -> dict[str, float]:
        """Numbers about the data read (rows, skipped lines by kind) for metrics.json and TensorBoard."""

    def summary(self) -> str:
        """One log paragraph about the data read (what was skipped, and where)."""


class SyntheticSource:
    """The synthetic generators as a data source: an endless training stream, a fixed validation set.

    Criteo-shaped batches can be made on the training device (``generate_on``); the datasets then
    yield ``BatchRequest``s and ``make`` turns one into a batch there. Retrieval batches are made on
    the host.

    Args:
        generator: makes batch ``i`` from ``(seed, i)``.
        batch_size: samples per batch per rank.
        num_val_batches: batches in the validation set (per rank).
        generate_on: where batches are made.
    """

    def __init__(self, generator: SyntheticCriteo | SyntheticRetrieval, batch_size: int, num_val_batches: int,
                 generate_on: GenerateOn = GenerateOn.host) -> None:
        self.generator = generator
        self.batch_size = batch_size
        self.num_val_batches = num_val_batches
        self.generate_on = GenerateOn(generate_on)
        self._synthesizers: dict[torch.device, DeviceSynthesizer] = {}
        self._on_device = False

    def setup(self) -> None:
        pass

    def place(self, device: torch.device) -> bool:
        """Decide, for a run on ``device``, whether batches are made there; returns the decision."""
        auto_device = self.generate_on == GenerateOn.auto and device.type == "cuda"
        wanted = self.generate_on == GenerateOn.device or auto_device
        self._on_device = wanted and isinstance(self.generator, SyntheticCriteo)
        return self._on_device

    def make(self, request: BatchRequest, device: torch.device) -> Any:
        """The batch of a request, made on ``device``."""
        synthesizer = self._synthesizers.get(device)
        if synthesizer is None:
            assert isinstance(self.generator, SyntheticCriteo), "only Criteo-shaped batches are made on a device"
            synthesizer = self._synthesizers[device] = DeviceSynthesizer(self.generator, device)
        return synthesizer.batch(request.index, request.batch_size)

    def train_dataset(self, rank: int, world_size: int, first_batch: int) -> IterableDataset:
        return SyntheticDataset(self.generator, self.batch_size, num_batches=None, rank=rank, world_size=world_size,
                                first_batch=first_batch, requests=self._on_device)

    def val_dataset(self, rank: int, world_size: int) -> IterableDataset:
        return SyntheticDataset(self.generator, self.batch_size, num_batches=self.num_val_batches, rank=rank,
                                world_size=world_size, first_batch=VALIDATION_FIRST_BATCH // world_size,
                                requests=self._on_device)

    def test_dataset(self, rank: int, world_size: int) -> None:
        """No test set: the validation batches are never trained on."""
        return None

    def report(self) -> dict[str, float]:
        return {}

    def summary(self) -> str:
        return ""


# ---- the data sources by ``data.kind``: each source's module registers its builder ------------
DATA_SOURCES: Registry[Callable[[DictConfig], DataSource]] = Registry("data source")


@DATA_SOURCES.register("synthetic")
def synthetic_from_config(cfg: DictConfig) -> SyntheticSource:
    """Criteo-shaped synthetic batches from a hidden model (``data=synthetic``)."""
    data, rows, ids = cfg.data, feature_rows(cfg), list(cfg.data.ids_per_feature)
    generator = SyntheticCriteo(
        SyntheticConfig(num_dense_features=len(cfg.features.dense),
                        table_sizes=tuple(rows[f] for f in cfg.features.sparse),
                        ids_per_feature=ids[0] if len(ids) == 1 else tuple(ids), zipf_exponent=data.zipf_exponent,
                        signal_strength=data.signal_strength, sparse_names=tuple(cfg.features.sparse),
                        num_tasks=len(tasks(cfg))),
        seed=data.seed,
    )
    return SyntheticSource(generator, batch_size=data.batch_size, num_val_batches=data.num_val_batches,
                           generate_on=data.generate_on)


@DATA_SOURCES.register("synthetic_retrieval")
def synthetic_retrieval_from_config(cfg: DictConfig) -> SyntheticSource:
    """Synthetic user histories and next items, for retrieval models (``data=synthetic_retrieval``)."""
    data = cfg.data
    generator = SyntheticRetrieval(
        SyntheticRetrievalConfig(num_users=data.num_users, num_items=data.num_items, num_clusters=data.num_clusters,
                                 history_length=data.history_length),
        seed=data.seed,
    )
    return SyntheticSource(generator, batch_size=data.batch_size, num_val_batches=data.num_val_batches)

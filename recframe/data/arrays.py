"""Finite data held as columns (in memory or memory-mapped), served in epochs of Batches per rank.

Training rows are shuffled once per epoch by a permutation drawn from ``(seed, epoch)``, the
same on every rank. Global batch ``k`` of an epoch is rows ``perm[k*B*W : (k+1)*B*W]`` (``B``
samples per rank, ``W`` ranks) and rank ``r`` reads its own slice ``r*B : (r+1)*B`` of it, so
every rank gets the same number of batches, ``batches_per_epoch = train_rows // (B*W)``; the
remainder of each epoch is dropped, the same on every rank (uneven counts would hang the
all-to-all of sharded tables). Rows of a batch are read in increasing order (memory maps read
fewer pages); a batch is the same set of rows whatever the world size divides.

Resume: a rank that has consumed ``c`` training batches continues at epoch ``c // batches_per_epoch``,
batch ``c % batches_per_epoch``. ``EpochLoader`` counts the passes Lightning makes over it, one
per epoch, and tells the dataset which epoch starts before each pass (its worker processes are
started per pass, so they see it too).

Validation rows are split into ``W`` equal contiguous parts (at most ``W - 1`` rows dropped),
read in order, in batches of ``B`` (the last one smaller, the same on every rank).

Example:
    >>> cols = Columns(dense=np.zeros((10, 2), np.float32), ids=np.arange(30).reshape(10, 3) % 4,
    ...                labels=np.zeros(10, np.float32))
    >>> plan = EpochPlan(num_rows=10, batch_size=4, world_size=1, rank=0, shuffle=False, seed=0)
    >>> plan.batches_per_epoch, plan.rows(epoch=0, batch=1).tolist()
    (2, [4, 5, 6, 7])
    >>> make_batch(cols, plan.rows(0, 0), keys=["a", "b", "c"]).sparse_features.values().tolist()[:4]
    [0, 3, 2, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recframe.sparse import Batch, KeyedJaggedTensor

IdTransform = Callable[[np.ndarray], np.ndarray]  # [b, F] stored ids -> [b, F] int64 table rows


@dataclass
class Columns:
    """Rows stored column-wise; row ``i`` is ``dense[i]``, ``ids[i]``, ``labels[i]``.

    Args:
        dense: ``[n, num_dense]`` float32.
        ids: ``[n, num_sparse]`` integer ids, one per sparse feature (table rows, or raw values
            mapped by an ``IdTransform`` at batch time), or ``[n, num_sparse, max_bag]`` for bags of
            ids (multi-hot), padded with -1.
        labels: ``[n]`` float32.
    """

    dense: np.ndarray
    ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def make_batch(columns: Columns, rows: np.ndarray, keys: list[str], id_transform: IdTransform | None = None) -> Batch:
    """The Batch of ``rows`` (one id per sparse feature per sample).

    Args:
        columns: the data.
        rows: row indices (increasing order reads memory maps best).
        keys: the sparse feature names, one per column of ``columns.ids``.
        id_transform: maps stored ids to table rows (None: stored ids are table rows).
    """
    ids = np.asarray(columns.ids[rows])
    if id_transform is not None:
        ids = id_transform(ids)
    size = rows.size
    if ids.ndim == 3:  # bags padded with -1: key-major, then sample, then position
        by_key = ids.transpose(1, 0, 2)
        present = by_key >= 0
        values = torch.from_numpy(by_key[present].astype(np.int64))
        lengths = torch.from_numpy(present.sum(axis=2).reshape(-1).astype(np.int64))
    else:
        values = torch.from_numpy(np.ascontiguousarray(ids.T, dtype=np.int64).reshape(-1))
        lengths = torch.ones(len(keys) * size, dtype=torch.int64)
    kjt = KeyedJaggedTensor.from_lengths(keys, values, lengths, stride=size, validate=False)
    return Batch(dense_features=torch.from_numpy(np.array(columns.dense[rows], dtype=np.float32)),
                 sparse_features=kjt, labels=torch.from_numpy(np.array(columns.labels[rows], dtype=np.float32)))


@dataclass(frozen=True)
class EpochPlan:
    """Which training rows each rank reads, batch by batch, epoch by epoch (see the module docstring).

    Args:
        num_rows: training rows (indices ``0 .. num_rows - 1`` of the columns).
        batch_size: samples per batch per rank.
        world_size: ranks.
        rank: this rank.
        shuffle: a new permutation every epoch (False: file order every epoch).
        seed: seed of the permutations.
    """

    num_rows: int
    batch_size: int
    world_size: int
    rank: int
    shuffle: bool
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        return self.num_rows // (self.batch_size * self.world_size)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the training rows in ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_rows, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def rows(self, epoch: int, batch: int, permutation: np.ndarray | None = None) -> np.ndarray:
        """This rank's rows of ``batch`` in ``epoch``, increasing."""
        order = self.permutation(epoch) if permutation is None else permutation
        first = (batch * self.world_size + self.rank) * self.batch_size
        return np.sort(order[first:first + self.batch_size])


class EpochBatches(IterableDataset):
    """One rank's training batches, one epoch per pass, starting at a resume position.

    Args:
        columns: the data (training rows first).
        plan: the epoch plan of this rank.
        keys: sparse feature names.
        first_batch: training batches this rank consumed before (resume position).
        id_transform: maps stored ids to table rows (None: as stored).
    """

    def __init__(self, columns: Columns, plan: EpochPlan, keys: list[str], first_batch: int = 0,
                 id_transform: IdTransform | None = None) -> None:
        super().__init__()
        if plan.batches_per_epoch < 1:
            raise ValueError(f"{plan.num_rows} training rows make no batch of {plan.batch_size} x {plan.world_size} "
                             "ranks; lower data.batch_size or use more data")
        self.columns, self.plan, self.keys, self.id_transform = columns, plan, keys, id_transform
        self._next = first_batch  # the position of the next pass's first batch
        self.epoch, self.skip = divmod(first_batch, plan.batches_per_epoch)

    def begin_pass(self) -> None:
        """Called once per pass (epoch), before iterating: fixes the epoch and the first batch of the pass."""
        self.epoch, self.skip = divmod(self._next, self.plan.batches_per_epoch)
        self._next = (self.epoch + 1) * self.plan.batches_per_epoch

    def __len__(self) -> int:
        return self.plan.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        permutation = self.plan.permutation(self.epoch)
        for k in range(self.skip + worker, self.plan.batches_per_epoch, workers):
            yield make_batch(self.columns, self.plan.rows(self.epoch, k, permutation), self.keys, self.id_transform)


class EpochLoader(DataLoader):
    """A DataLoader over ``EpochBatches`` that starts each pass (epoch) at the right place.

    Worker processes are not persistent: they are started per pass, after ``begin_pass``. The
    loader is resumable, and says so to Lightning (``state_dict``), but keeps nothing itself: the
    data position is the RecDataModule's (``train_batches_consumed``), given to the dataset it reads.
    """

    def __iter__(self):  # noqa: ANN204 (DataLoader's iterator types are private)
        self.dataset.begin_pass()  # type: ignore[attr-defined]
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """Nothing to save: the position lives in the data module's state."""
        return {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Nothing to load (see ``state_dict``)."""


class ValBatches(IterableDataset):
    """One rank's part of the validation rows, in order, in batches (the last one smaller).

    Args:
        columns: the data.
        first_row: the first validation row.
        num_rows: validation rows (all ranks).
        batch_size: samples per batch.
        world_size: ranks.
        rank: this rank.
        keys: sparse feature names.
        id_transform: maps stored ids to table rows (None: as stored).
    """

    def __init__(self, columns: Columns, first_row: int, num_rows: int, batch_size: int, world_size: int,
                 rank: int, keys: list[str], id_transform: IdTransform | None = None) -> None:
        super().__init__()
        self.columns, self.keys, self.batch_size, self.id_transform = columns, keys, batch_size, id_transform
        part = num_rows // world_size
        self.start = first_row + rank * part
        self.stop = self.start + part

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k in range(worker, len(self), workers):
            first = self.start + k * self.batch_size
            rows = np.arange(first, min(first + self.batch_size, self.stop), dtype=np.int64)
            yield make_batch(self.columns, rows, self.keys, self.id_transform)


class InMemorySource:
    """The shared plumbing of data sources that hold every row as ``Columns`` (Criteo TSV and binary,
    MovieLens, CSV): rows split in file order, the first ``num_train`` for training (reshuffled every
    epoch with ``seed``), the rest for validation.

    A subclass sets, by the end of its ``setup()``: ``columns``, ``num_train``, and in ``__init__``:
    ``batch_size``, ``shuffle``, ``seed``, ``keys`` (the KJT keys) and ``id_transform`` (stored ids ->
    table rows, or None).

    Example:
        >>> class Tiny(InMemorySource):  # doctest: +SKIP
        ...     def setup(self) -> None: self.columns, self.num_train = columns, 80
    """

    columns: Columns | None
    num_train: int
    batch_size: int
    shuffle: bool
    seed: int
    keys: list[str]
    id_transform: IdTransform | None = None

    def setup(self) -> None:
        raise NotImplementedError

    def _columns(self) -> Columns:
        self.setup()
        assert self.columns is not None
        return self.columns

    def train_dataset(self, rank: int, world_size: int, first_batch: int) -> IterableDataset:
        """This rank's training batches from position ``first_batch`` (batches it consumed)."""
        columns = self._columns()
        plan = EpochPlan(self.num_train, self.batch_size, world_size, rank, self.shuffle, self.seed)
        return EpochBatches(columns, plan, self.keys, first_batch=first_batch, id_transform=self.id_transform)

    def val_dataset(self, rank: int, world_size: int) -> IterableDataset:
        """This rank's validation batches."""
        columns = self._columns()
        return ValBatches(columns, self.num_train, len(columns) - self.num_train, self.batch_size, world_size, rank,
                          self.keys, id_transform=self.id_transform)

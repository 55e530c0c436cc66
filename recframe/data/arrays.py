"""Finite data held as columns (in memory or memory-mapped), served in epochs of Batches per rank.

Training rows are shuffled once per epoch by a permutation drawn from ``(seed, epoch)``, the
same on every rank. Global batch ``k`` of an epoch is rows ``perm[k*B*W : (k+1)*B*W]`` (``B``
samples per rank, ``W`` ranks) and rank ``r`` reads its own slice ``r*B : (r+1)*B`` of it, so
every rank gets the same number of batches, ``batches_per_epoch = train_rows // (B*W)``; the
remainder of each epoch is dropped, the same on every rank (uneven counts would hang the
all-to-all of sharded tables). Rows of a batch are read in increasing order (memory maps read
fewer pages); a batch is the same set of rows whatever the world size divides.

Shuffling by batch (``EpochPlan.by_batch``) permutes the order of the global batches instead:
global batch ``k`` of an epoch is the contiguous rows ``[j*B*W, (j+1)*B*W)`` with ``j = perm[k]``
(a permutation of ``batches_per_epoch``), so every batch is a slice, read without a gather (rows
within a batch keep file order: shuffle the file once beforehand). Without shuffling, batches are
slices in file order.

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
    >>> plan.batches_per_epoch, plan.rows(epoch=0, batch=1).tolist(), plan.select(0, 1, plan.order(0))
    (2, [4, 5, 6, 7], slice(4, 8, None))
    >>> make_batch(cols, plan.select(0, 0, None), keys=["a", "b", "c"]).sparse_features.values().tolist()[:4]
    [0, 3, 2, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recframe.sparse import Batch, KeyedJaggedTensor

IdTransform = Callable[[np.ndarray], np.ndarray]  # [b, F] stored ids -> [b, F] int64 table rows
Rows = np.ndarray | slice  # a batch's rows: a contiguous slice (read as views) or increasing indices (gathered)


def count_rows(rows: Rows) -> int:
    """How many rows ``rows`` selects (a slice's step must be 1).

    Args:
        rows: a slice with a start and a stop, or an index array.

    Example:
        >>> count_rows(slice(8, 12)), count_rows(np.array([1, 5]))
        (4, 2)
    """
    return rows.stop - rows.start if isinstance(rows, slice) else int(rows.size)


def pin_here(requested: bool) -> bool:
    """Whether a batch is written straight into page-locked memory here: when ``requested``, a CUDA
    device is present, and this is not a DataLoader worker (a worker's batches are pinned by the
    loader's pin-memory thread; already-pinned tensors pass it without a copy).

    Args:
        requested: the data config's ``pin_memory``.

    Example:
        >>> pin_here(False)
        False
    """
    return requested and get_worker_info() is None and torch.cuda.is_available()


_NUMPY_TYPES = {torch.int32: np.int32, torch.int64: np.int64, torch.float32: np.float32}


def host_empty(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """A new uninitialized CPU tensor for a batch, page-locked when ``pin``.

    Pinned blocks come from torch's caching host allocator: a block is reused only once the copies
    that read it have finished, so a batch made there needs no second copy to be pinned. Unpinned
    blocks come from numpy's allocator, which reuses freed heap pages: torch's CPU allocator hands
    out fresh pages for blocks of megabytes (with transparent huge pages, ~5 ms to fault in 7 MB, more
    than reading the batch).

    Args:
        shape: the tensor's shape.
        dtype: int32, int64 or float32.
        pin: page-locked memory (needs CUDA).

    Example:
        >>> host_empty((2, 3), torch.int32, pin=False).shape
        torch.Size([2, 3])
    """
    if pin:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_TYPES[dtype]))


def to_host(array: np.ndarray, dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """A new CPU tensor holding ``array`` (cast as ``same_kind`` allows), page-locked when ``pin``.

    Args:
        array: the data (any strides: a transposed view is written in the tensor's row-major order).
        dtype: the tensor's type (see ``host_empty``).
        pin: page-locked memory (needs CUDA).

    Example:
        >>> to_host(np.arange(6, dtype=np.int32).reshape(2, 3).T, torch.int64, pin=False).tolist()
        [[0, 3], [1, 4], [2, 5]]
    """
    out = host_empty(array.shape, dtype, pin)
    np.copyto(out.numpy(), array, casting="same_kind")
    return out


@dataclass
class Columns:
    """Rows stored column-wise; row ``i`` is ``dense[i]``, ``ids[i]``, ``labels[i]``.

    Args:
        dense: ``[n, num_dense]`` float32.
        ids: ``[n, num_sparse]`` integer ids, one per sparse feature (table rows, or raw values
            mapped by an ``IdTransform`` at batch time), or ``[n, num_sparse, max_bag]`` for bags of
            ids (multi-hot), padded with -1.
        labels: ``[n]`` float32, or ``[n, tasks]`` for several tasks.
    """

    dense: np.ndarray
    ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, start: int, stop: int) -> Columns:
        """Rows ``start .. stop - 1`` (views of the arrays).

        Example:
            >>> len(Columns(np.zeros((5, 1)), np.zeros((5, 2)), np.zeros(5)).rows(1, 4))
            3
        """
        return Columns(self.dense[start:stop], self.ids[start:stop], self.labels[start:stop])


def make_batch(columns: Columns, rows: Rows, keys: list[str], id_transform: IdTransform | None = None,
               pin: bool = False) -> Batch:
    """The Batch of ``rows`` (one id per sparse feature per sample, or bags padded with -1).

    A slice reads each column as one contiguous block (a view of a memory map); indices gather.

    Args:
        columns: the data.
        rows: a slice, or row indices (increasing order reads memory maps best).
        keys: the sparse feature names, one per column of ``columns.ids``.
        id_transform: maps stored ids to table rows (None: stored ids are table rows).
        pin: write the batch into page-locked memory (see ``pin_here``).
    """
    ids = columns.ids[rows]
    if id_transform is not None:
        ids = id_transform(ids)
    size = count_rows(rows)
    if ids.ndim == 3:  # bags padded with -1: key-major, then sample, then position
        by_key = ids.transpose(1, 0, 2)
        present = by_key >= 0
        values = to_host(by_key[present], torch.int64, pin)
        lengths = to_host(present.sum(axis=2).reshape(-1), torch.int64, pin)
    else:  # the transposing copy is the one copy of the ids
        values = to_host(ids.T, torch.int64, pin).reshape(-1)
        lengths = torch.ones(len(keys) * size, dtype=torch.int64, pin_memory=pin)
    kjt = KeyedJaggedTensor.from_lengths(keys, values, lengths, stride=size, validate=False)
    return Batch(dense_features=to_host(columns.dense[rows], torch.float32, pin), sparse_features=kjt,
                 labels=to_host(columns.labels[rows], torch.float32, pin))


class BatchReader(Protocol):
    """Reads the Batch of some rows of a data set (picklable, for DataLoader workers)."""

    def __call__(self, rows: Rows) -> Batch:
        """The Batch of ``rows`` (a slice, or increasing indices)."""


@dataclass
class ColumnsReader:
    """``make_batch`` over fixed columns, pinned where ``pin_here`` says.

    Args:
        columns: the data.
        keys: the sparse feature names.
        id_transform: maps stored ids to table rows (None: as stored).
        pin_memory: page-locked batches (in the main process, with CUDA).

    Example:
        >>> cols = Columns(dense=np.zeros((4, 1), np.float32), ids=np.arange(4)[:, None], labels=np.ones(4))
        >>> ColumnsReader(cols, ["a"])(slice(1, 3)).sparse_features.values().tolist()
        [1, 2]
    """

    columns: Columns
    keys: list[str]
    id_transform: IdTransform | None = None
    pin_memory: bool = False

    def __call__(self, rows: Rows) -> Batch:
        return make_batch(self.columns, rows, self.keys, self.id_transform, pin=pin_here(self.pin_memory))


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
        by_batch: shuffle permutes the order of contiguous batches, not the rows (every batch a slice).
    """

    num_rows: int
    batch_size: int
    world_size: int
    rank: int
    shuffle: bool
    seed: int
    by_batch: bool = False

    @property
    def batches_per_epoch(self) -> int:
        return self.num_rows // (self.batch_size * self.world_size)

    def order(self, epoch: int) -> np.ndarray | None:
        """The random order of ``epoch``: of the rows, of the batches (``by_batch``), or None (no shuffle)."""
        if not self.shuffle:
            return None
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.batches_per_epoch if self.by_batch else self.num_rows)

    def select(self, epoch: int, batch: int, order: np.ndarray | None) -> Rows:
        """This rank's rows of ``batch`` in ``epoch``: a slice, or (rows shuffled) increasing indices.

        Args:
            epoch: the epoch.
            batch: the batch's position in the epoch.
            order: ``self.order(epoch)`` (drawn once per epoch by the caller).
        """
        if order is not None and not self.by_batch:
            first = (batch * self.world_size + self.rank) * self.batch_size
            return np.sort(order[first:first + self.batch_size])
        block = batch if order is None else int(order[batch])
        first = (block * self.world_size + self.rank) * self.batch_size
        return slice(first, first + self.batch_size)

    def rows(self, epoch: int, batch: int) -> np.ndarray:
        """``select`` as row indices, increasing."""
        rows = self.select(epoch, batch, self.order(epoch))
        return np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows


class EpochBatches(IterableDataset):
    """One rank's training batches, one epoch per pass, starting at a resume position.

    Args:
        read: reads the Batch of some rows (training rows are ``0 .. plan.num_rows - 1``).
        plan: the epoch plan of this rank.
        first_batch: training batches this rank consumed before (resume position).
    """

    def __init__(self, read: BatchReader, plan: EpochPlan, first_batch: int = 0) -> None:
        super().__init__()
        if plan.batches_per_epoch < 1:
            raise ValueError(f"{plan.num_rows} training rows make no batch of {plan.batch_size} x {plan.world_size} "
                             "ranks; lower data.batch_size or use more data")
        self.read, self.plan = read, plan
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
        order = self.plan.order(self.epoch)
        for k in range(self.skip + worker, self.plan.batches_per_epoch, workers):
            yield self.read(self.plan.select(self.epoch, k, order))


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
        read: reads the Batch of some rows.
        first_row: the first validation row.
        num_rows: validation rows (all ranks).
        batch_size: samples per batch.
        world_size: ranks.
        rank: this rank.
    """

    def __init__(self, read: BatchReader, first_row: int, num_rows: int, batch_size: int, world_size: int,
                 rank: int) -> None:
        super().__init__()
        self.read, self.batch_size = read, batch_size
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
            yield self.read(slice(first, min(first + self.batch_size, self.stop)))

"""``SyntheticDataset``: the batches of a synthetic generator, split over ranks and DataLoader workers.

Batch ``i`` depends only on (seed, i), so a rank takes every ``world_size``-th global batch from
its position on, and a resumed run continues with the next unseen one. With ``requests`` the
dataset yields only ``BatchRequest``s (index and size) for a consumer that makes the batches on
the training device (``recframe.data.synthetic_device``).

Example:
    >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
    >>> gen = SyntheticCriteo(SyntheticConfig(table_sizes=(10,)), seed=0)
    >>> list(SyntheticDataset(gen, batch_size=4, num_batches=2, rank=1, world_size=2, requests=True))
    [BatchRequest(index=1, batch_size=4), BatchRequest(index=3, batch_size=4)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch.utils.data import IterableDataset, get_worker_info

from recframe.sparse import Batch

if TYPE_CHECKING:
    from recframe.data.synthetic import SyntheticCriteo
    from recframe.data.synthetic_retrieval import SyntheticRetrieval


@dataclass(frozen=True)
class BatchRequest:
    """A synthetic batch to be made where it is consumed: its global index and size.

    Args:
        index: the global batch number (``SyntheticCriteo.batch``'s ``index``).
        batch_size: samples in the batch.
    """

    index: int
    batch_size: int


class SyntheticDataset(IterableDataset):
    """A reproducible sequence of synthetic batches, split over ranks and DataLoader workers.

    Rank ``r`` of ``world_size`` yields the global batches ``r, r + world_size, ...``; its DataLoader
    workers share them round-robin. Iterating again yields the same batches. Use it with
    ``DataLoader(dataset, batch_size=None)``: the items are already batches.

    Args:
        generator: a ``SyntheticCriteo`` or ``SyntheticRetrieval``.
        batch_size: samples per batch.
        num_batches: batches this rank yields per pass; None for an endless stream.
        rank: this process's rank.
        world_size: number of ranks.
        first_batch: this rank's position to start from (batches it already consumed), so that a
            resumed run continues with the next unseen batch.
        requests: yield ``BatchRequest``s (index and size) instead of batches, for a consumer that
            makes them on the training device (``recframe.data.synthetic_device``).

    Example:
        >>> from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
        >>> gen = SyntheticCriteo(SyntheticConfig(table_sizes=(10,)), seed=0)
        >>> len(list(SyntheticDataset(gen, batch_size=4, num_batches=3)))
        3
    """

    def __init__(
        self,
        generator: SyntheticCriteo | SyntheticRetrieval,
        batch_size: int,
        num_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        first_batch: int = 0,
        requests: bool = False,
    ) -> None:
        super().__init__()
        if (batch_size < 1 or (num_batches is not None and num_batches < 0) or not 0 <= rank < world_size
                or first_batch < 0):
            raise ValueError(f"SyntheticDataset: got batch_size={batch_size}, num_batches={num_batches}, "
                             f"rank={rank}, world_size={world_size}, first_batch={first_batch}")
        self.generator = generator
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.rank = rank
        self.world_size = world_size
        self.first_batch = first_batch
        self.requests = requests

    def __iter__(self) -> Iterator[Batch | BatchRequest]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        k = worker
        while self.num_batches is None or k < self.num_batches:
            index = self.rank + self.world_size * (self.first_batch + k)
            if self.requests:
                yield BatchRequest(index, self.batch_size)
            else:
                yield self.generator.batch(index, self.batch_size)
            k += num_workers

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless SyntheticDataset has no length")
        return self.num_batches

"""The input dists a sharded collection started ahead of their forward (the pipelined step).

``ShardedEmbeddingBagCollection.prefetch(features)`` starts a batch's input dist and puts it here,
keyed by the identity of the batch's KeyedJaggedTensor (held, so its id cannot be reused by another
object); ``forward(features)`` takes it back. Batches are consumed in the order they were started,
so taking one finishes and drops the ones started before it (batches that were skipped). The queue
is bounded: adding past ``limit`` finishes and drops the oldest. Finishing means waiting for the
collectives already launched (every rank launched the same ones), never launching new ones.

Order of collectives (why the ranks stay in step): the collection's ``prefetch``, ``forward`` and
backward are collective, and every rank calls them in the same program order, from its main
thread. The pipeline driver (``recframe.data.prefetch.DevicePrefetcher`` with the
training module's callback) calls ``prefetch`` for a later batch at one point of the loop,
the same on every rank: when the loader hands out a batch, i.e. between two steps, never
inside a forward or backward. So with batch ``j`` started while step ``i`` is ahead
(``j = i + 1``, or ``i + 2`` behind Lightning's own one-batch fetch), every rank issues:
batch ``j``'s lengths all-to-all and its ids (weights) all-to-alls, then step ``i``'s
input dist (or only the wait for it), output all-to-all (launched in ``forward``, waited
for at the model's first read of the values), the backward all-to-all and DDP's gradient
all-reduces (in the order the autograd engine reaches their nodes, which depends only on
the graph's dense part and the order its nodes were made: the same on every rank), then
batch ``j + 1``'s input all-to-alls, and so on: one sequence on every rank. ``async_op``
only defers a collective's *completion*, never the order in which it is issued, and the
process group matches collectives by that order (gloo by a tag counted per issued
collective, NCCL by its one stream per communicator).
Each wait (the host read of the received lengths in ``start``, ``PendingInput.wait``)
is for a collective that every rank has already issued, so none can deadlock. Skipping a
``prefetch`` is harmless for the order only when every rank skips it (the driver is the
same code on every rank, and ``forward`` then starts the input dist itself, in order).

Example:
    >>> queue = PrefetchQueue(limit=3)
    >>> queue.take(kjt) is None  # nothing started for this batch  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
from collections import deque

from recframe.distributed.pending_input import PendingInput
from recframe.sparse import KeyedJaggedTensor


@dataclasses.dataclass(frozen=True)
class Prefetched:
    """An input dist started ahead of its forward.

    Args:
        features: the batch's KeyedJaggedTensor as given to ``prefetch`` (held: its id cannot be reused).
        selected: the collection's features of it, in order (what the input dist was started on).
        pending: the input dist in flight (None: the collection has no model-parallel table, nothing travels).
    """

    features: KeyedJaggedTensor
    selected: KeyedJaggedTensor
    pending: PendingInput | None

    def finish(self) -> None:
        """Wait for the input dist (no-op without one)."""
        if self.pending is not None:
            self.pending.wait()


class PrefetchQueue:
    """Started input dists in start order, at most ``limit`` of them.

    Args:
        limit: how many may wait for their forward; adding one more finishes and drops the oldest.

    Example:
        >>> queue = PrefetchQueue(limit=3)
        >>> queue.add(Prefetched(kjt, kjt, route.start(kjt)))  # doctest: +SKIP
        >>> queue.take(kjt).pending.wait()  # doctest: +SKIP
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"PrefetchQueue: limit must be >= 1, got {limit}")
        self.limit = limit
        self._started: deque[Prefetched] = deque()

    def __len__(self) -> int:
        return len(self._started)

    def add(self, started: Prefetched) -> None:
        """Keep a started input dist; past ``limit``, finish and drop the oldest."""
        self._started.append(started)
        while len(self._started) > self.limit:
            self._started.popleft().finish()

    def take(self, features: KeyedJaggedTensor) -> Prefetched | None:
        """The started input dist of this very object (removed; the older ones finished and dropped), or None."""
        if not any(p.features is features for p in self._started):
            return None
        while True:
            started = self._started.popleft()
            if started.features is features:
                return started
            started.finish()

    def drop(self) -> None:
        """Finish and drop every started input dist."""
        while self._started:
            self._started.popleft().finish()

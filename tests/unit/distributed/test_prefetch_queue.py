"""PrefetchQueue: taken by identity, older entries finished and dropped, bounded."""

from __future__ import annotations

import pytest
import torch

from recframe.distributed.prefetch_queue import Prefetched, PrefetchQueue
from recframe.sparse import KeyedJaggedTensor


class FakePending:
    """Counts its waits (a PendingInput without collectives)."""

    def __init__(self) -> None:
        self.waits = 0

    def wait(self) -> None:
        self.waits += 1


def kjt() -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 2]), torch.tensor([1, 1]))


def started(features: KeyedJaggedTensor) -> Prefetched:
    return Prefetched(features, features, FakePending())  # type: ignore[arg-type]


def test_take_finds_the_very_object_and_finishes_the_skipped_ones() -> None:
    queue = PrefetchQueue(limit=3)
    a, b, c = kjt(), kjt(), kjt()
    entries = [started(x) for x in (a, b, c)]
    for entry in entries:
        queue.add(entry)
    assert queue.take(kjt()) is None and len(queue) == 3, "an equal batch is not the same batch"
    assert queue.take(b) is entries[1]
    assert entries[0].pending.waits == 1 and entries[1].pending.waits == 0, "the skipped one is finished"
    assert len(queue) == 1 and queue.take(c) is entries[2] and len(queue) == 0


def test_adding_past_the_limit_finishes_the_oldest_and_drop_finishes_all() -> None:
    queue = PrefetchQueue(limit=2)
    entries = [started(kjt()) for _ in range(3)]
    for entry in entries:
        queue.add(entry)
    assert len(queue) == 2 and entries[0].pending.waits == 1
    queue.drop()
    assert len(queue) == 0 and [e.pending.waits for e in entries] == [1, 1, 1]
    with pytest.raises(ValueError, match="limit"):
        PrefetchQueue(limit=0)

"""A rank sends each routed slot its distinct ids once (issue 24): hot ids cost one row a rank and step, not one per
occurrence. One process (world of 1): the ids that travel, and the rows expanded back for pooling."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist

from recframe.distributed.input_dist import InputDist, Slot
from recframe.sparse import KeyedJaggedTensor


@pytest.fixture
def world_of_one():
    store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_routed_slots_get_each_distinct_id_once(world_of_one) -> None:
    # f: routed over two blocks [0, 4) and [4, 10) of one rank; g: pooled row_wise, whose ids all travel
    slots = [Slot(0, 0, 0, 4, True, routed=True), Slot(0, 0, 4, 10, True, routed=True), Slot(0, 1, 0, 10, True)]
    route = InputDist(["f", "g"], ["t", "u"], [10, 10], ["error", "error"], slots, world_size=1, rank=0, group=None,
                      check_ids=True, receive_order=[0, 1, 2])
    # f: sample 0 [3, 7, 3], sample 1 [3, 9, 7, 7]; g: sample 0 [2, 2], sample 1 [5]
    kjt = KeyedJaggedTensor.from_lengths(["f", "g"], torch.tensor([3, 7, 3, 3, 9, 7, 7, 2, 2, 5]),
                                         torch.tensor([3, 4, 2, 1]), weights=torch.arange(10.0))
    pending = route.start(kjt)
    local = pending.wait()
    values = local.values().tolist()
    assert values == [3, 3, 5, 2, 2, 5]  # f's block 0: 3; block 1: 7, 9 (as rows 3, 5 of it); g: all three ids
    sent = pending.routed
    assert sent.counts == [1, 2] and sent.ids == [3, 4]  # distinct ids per routed slot; the batch's ids per slot
    assert sent.samples.tolist() == [0, 0, 1, 0, 1, 1, 1]  # block 0: 3, 3 | 3; block 1: 7 | 9, 7, 7
    assert sent.inverse.tolist() == [0, 0, 0, 0, 1, 0, 0]  # each id's row among its block's distinct ids
    assert sent.weights.tolist() == [0.0, 2.0, 3.0, 1.0, 4.0, 5.0, 6.0]  # the batch's weights stay with the sender
    assert local.weights().tolist()[:3] == [1.0, 1.0, 1.0]  # a distinct routed id travels with weight 1

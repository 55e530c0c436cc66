"""LengthsPacking: the lengths all-to-all when some slots are routed: one count a routed slot instead of ``B`` lengths.

The input dist sends every slot's ``B`` bag lengths, so that its receiver can pool the bags. A
routed slot's receiver (row_wise_routed) pools nothing: it looks its ids up one by one and returns
their rows in the order they came, and the sender, which keeps the sample of each id, pools them.
So a routed slot needs only its number of ids: one entry instead of ``B``. Per destination rank the
lengths message is then ``1 + B x pooled slots + routed slots`` entries (the flag first), and a rank
with routed shards of ``T`` tables receives ``T`` entries from each rank instead of ``T x B``: with
thousands of ranks that is most of the input all-to-all's bytes.

The receiver puts each routed count where the slot's first bag length would be (the other bags
empty), so everything after the all-to-all (the ids' counts, the reorder by feature, the local
KeyedJaggedTensor) is as for pooled slots; the routed lookups ignore the bag structure.

Example:
    >>> pack = LengthsPacking(slot_rank=[0, 0, 1], routed=[False, True, True], rank=1, world=2, batch=2,
    ...                       device=torch.device("cpu"))
    >>> flag, lengths, per_slot = torch.tensor([1]), torch.tensor([3, 4, 1, 0, 2, 2]), torch.tensor([7, 1, 4])
    >>> pack.send(flag, lengths, per_slot).tolist(), pack.send_splits  # to rank 0: flag, 3, 4, 1; to rank 1: flag, 4
    ([1, 3, 4, 1, 1, 4], [4, 2])
    >>> pack.unpack(torch.tensor([[0, 5], [1, 4]])).tolist()  # from each source: flag, the count of rank 1's slot
    [[5, 0], [4, 0]]
"""

from __future__ import annotations

import torch


def _gather_index(starts: list[int], sizes: list[int], device: torch.device) -> torch.Tensor:
    """``cat(range(start, start + size) for each item)`` as one int64 tensor, without a Python loop over entries.

    Args:
        starts: each item's first position.
        sizes: each item's number of entries.
        device: where the index lives.
    """
    size = torch.tensor(sizes, dtype=torch.int64)
    first = torch.cumsum(size, 0) - size
    total = int(size.sum())
    offset = torch.arange(total) - torch.repeat_interleave(first, size, output_size=total)
    return (torch.repeat_interleave(torch.tensor(starts, dtype=torch.int64), size, output_size=total) + offset).to(
        device)


class LengthsPacking:
    """Where each entry of one rank's lengths all-to-all comes from and lands, for one local batch size ``B``.

    Args:
        slot_rank: each slot's destination rank, in slot order (ordered by rank).
        routed: whether each slot is routed (one count instead of ``B`` lengths).
        rank: this rank.
        world: the number of ranks.
        batch: the local batch size ``B`` (the same on every rank).
        device: where the index tensors live.
    """

    def __init__(self, slot_rank: list[int], routed: list[bool], rank: int, world: int, batch: int,
                 device: torch.device) -> None:
        slots = len(slot_rank)
        starts, sizes = [], []  # items of the send buffer, from cat([flag, lengths [slots * B], per-slot counts])
        self.send_splits = [0] * world
        by_rank: list[list[int]] = [[] for _ in range(world)]
        for k, r in enumerate(slot_rank):
            by_rank[r].append(k)
        for r, ks in enumerate(by_rank):
            starts.append(0)
            sizes.append(1)
            for k in ks:
                starts.append(1 + slots * batch + k if routed[k] else 1 + k * batch)
                sizes.append(1 if routed[k] else batch)
            self.send_splits[r] = 1 + sum(1 if routed[k] else batch for k in ks)
        self.send_index = _gather_index(starts, sizes, device)
        own = by_rank[rank]
        self.width = 1 + sum(1 if routed[k] else batch for k in own)  # entries from each source
        self.recv_splits = [self.width] * world
        self.own_width = len(own) * batch  # each source's block of lengths, unpacked
        self.recv_index = _gather_index([j * batch for j in range(len(own))],
                                        [1 if routed[k] else batch for k in own], device)

    def send(self, flag: torch.Tensor, lengths: torch.Tensor, per_slot: torch.Tensor) -> torch.Tensor:
        """The flat message: for each destination, the flag, then each of its slots' lengths or count.

        Args:
            flag: ``[1]`` the "sender has weights" entry.
            lengths: ``[slots * B]`` the bag lengths of every slot.
            per_slot: ``[slots]`` the ids of every slot.
        """
        return torch.cat([flag, lengths, per_slot]).index_select(0, self.send_index)

    def unpack(self, recv: torch.Tensor) -> torch.Tensor:
        """``[world, own slots * B]`` lengths from the received ``[world, width]`` (flags first): a routed slot's
        count lands in its first bag, its other bags are empty.

        Args:
            recv: what the all-to-all gave, one row per source rank.
        """
        out = recv.new_zeros(recv.shape[0], self.own_width)
        out[:, self.recv_index] = recv[:, 1:]
        return out

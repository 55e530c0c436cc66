"""Input dist: send every id of a KeyedJaggedTensor to the rank(s) holding its table's rows.

Routing is described by *slots*: a slot is one feature's input to one shard on one rank. A
row-split (row_wise, table_row_wise) table has one slot per shard and each id goes to exactly
one of them, the shard whose ``[row_start, row_end)`` holds it, minus ``row_start`` (so a
shard sees its own row numbers); a table_wise table has one slot; a column_wise table one per
column shard, and those get every id of the feature. data_parallel tables have none: their ids stay
on the rank (the sharded collection gives the input dist only the other tables' features).
Slots are ordered by destination rank, then in the order of the destination's local lookup.

One call, for the whole collection (all tables, all features):

1. On the sending rank, ids are checked or hashed into their table's full range (the table's
   ``id_policy``, as the unsharded collection does), then bucketized into slots, vectorized
   (a stable sort by ``(slot, sample)``: ids keep their order within a bag). A routed slot
   (row_wise_routed) gets each distinct id once, in increasing order; the sender keeps which
   distinct id each of its ids is (``RoutedIds``) to expand the rows that come back.
2. One all-to-all of the lengths (static sizes: ``slots of d * B`` per destination ``d``, plus
   one header entry saying whether the sender has per-id weights; a routed slot sends its count
   alone: ``routed_lengths.py``), one of the ids (sizes from
   the lengths: one host sync), and one of the per-id weights when any rank has weights (a rank
   without weights sends ones, so ranks never disagree on the collectives they call).
3. The receiver reorders the blocks from ``(source rank, feature)`` to ``(feature, source rank)``,
   its features in ``receive_order`` (the order its local lookups take them in, so that they need
   no reorder of their own), and gets a KeyedJaggedTensor of its local features for the global
   batch: stride ``world * B``, sample ``s * B + b`` being sample ``b`` of rank ``s``.

The call can be split in two, to overlap the ids' transfer with other work (the pipelined
training step): ``InputDist.start(kjt)`` runs steps 1 and 2 up to launching the ids and weights
all-to-alls (``async_op=True``) and returns a ``PendingInput``; its ``wait()`` waits for them and
does step 3. ``InputDist(kjt)`` is ``start(kjt).wait()``: the same collectives, in the same order,
with the same results.

Every rank must pass the same local batch size ``B`` (the lengths all-to-all has static sizes).
The routing tables (buffers) describe all ranks' slots, so they are identical on every rank.

Example (one process, world of 1; table ``t`` of 10 rows row-split in one shard):
    >>> import os, tempfile, torch, torch.distributed as dist
    >>> from recframe.sparse import KeyedJaggedTensor
    >>> store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    >>> route = InputDist(["f"], ["t"], [10], ["modulo"], [Slot(rank=0, feature=0, row_start=0, row_end=10,
    ...                   row_split=True)], world_size=1, rank=0, group=None, check_ids=True, receive_order=[0])
    >>> local = route(KeyedJaggedTensor.from_lengths(["f"], torch.tensor([3, 12, 5]), torch.tensor([2, 1])))
    >>> local.keys(), local.values().tolist(), local.lengths().tolist()
    (['f'], [3, 2, 5], [2, 1])
    >>> dist.destroy_process_group()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from recframe.distributed.comms import all_to_all_1d, start_all_to_all_1d
from recframe.distributed.faults import fault_point
from recframe.distributed.pending_input import PendingInput, RoutedIds
from recframe.distributed.routed_lengths import LengthsPacking
from recframe.embedding.ids import GroupInput
from recframe.sparse import KeyedJaggedTensor
from recframe.vocab import IdPolicy, Pooling


@dataclass(frozen=True)
class Slot:
    """One feature's input to one shard.

    Args:
        rank: the destination rank (in the process group).
        feature: index of the feature in the collection's feature order.
        row_start: first row of the shard (row-split tables); 0 otherwise.
        row_end: end of the shard's rows (row-split tables); the table's rows otherwise.
        row_split: the shard holds a block of rows: only ids in ``[row_start, row_end)`` go here.
        routed: the shard returns one row per id, which the sending rank pools (row_wise_routed;
            ``recframe.distributed.routed``): the sender keeps ``RoutedIds`` of what it sent.
    """

    rank: int
    feature: int
    row_start: int
    row_end: int
    row_split: bool
    routed: bool = False


class InputDist(nn.Module):
    """The KJT all-to-all of one sharded collection (see the module docstring).

    Args:
        features: the collection's features, in order.
        tables: the table of each feature.
        rows: the number of rows of each feature's table.
        id_policies: ``error`` or ``modulo``, for each feature (its table's policy).
        slots: every slot, ordered by rank, then in the receiving rank's local feature order.
        world_size: number of ranks of ``group``.
        rank: this rank in ``group``.
        group: the process group (None = the default group).
        check_ids: raise on out-of-range ids of ``error`` tables, before they are sent.
        receive_order: the order of this rank's local features in the result, as positions among
            this rank's slots (a permutation of ``range(its slots)``).
    """

    def __init__(self, features: list[str], tables: list[str], rows: list[int], id_policies: list[IdPolicy],
                 slots: list[Slot], world_size: int, rank: int, group: dist.ProcessGroup | None,
                 check_ids: bool, receive_order: list[int]) -> None:
        super().__init__()
        num_features = len(features)
        if [s.rank for s in slots] != sorted(s.rank for s in slots):
            raise ValueError("slots must be ordered by destination rank")
        self.features, self.world_size, self.rank, self.group = list(features), world_size, rank, group
        self.ids = GroupInput(list(features), list(tables), list(rows), list(id_policies), Pooling.sum, check_ids)
        self.slots_per_rank = [sum(1 for s in slots if s.rank == r) for r in range(world_size)]
        self.local_features = [features[s.feature] for s in slots if s.rank == rank]
        if sorted(receive_order) != list(range(len(self.local_features))):
            raise ValueError(f"receive_order {receive_order} is not an order of this rank's "
                             f"{len(self.local_features)} slots")
        self.receive_order = list(receive_order)
        per_feature: list[list[int]] = [[] for _ in range(num_features)]
        for k, slot in enumerate(slots):
            per_feature[slot.feature].append(k)
        if any(not ks for ks in per_feature):
            raise ValueError(f"features {[f for f, ks in zip(features, per_feature, strict=True) if not ks]} "
                             "have no slot")
        width = max(len(ks) for ks in per_feature)
        slot_of = torch.full((num_features, width), -1, dtype=torch.int64)
        row_start = torch.zeros(num_features, width, dtype=torch.int64)
        bucket_start = torch.full((num_features, width), torch.iinfo(torch.int64).max, dtype=torch.int64)
        row_split = torch.zeros(num_features, dtype=torch.bool)
        copies = []
        for f, ks in enumerate(per_feature):
            kinds = {slots[k].row_split for k in ks}
            if len(kinds) != 1:
                raise ValueError(f"feature {features[f]!r} mixes row-split and replicated slots")
            split = kinds.pop()
            row_split[f] = split
            if split:  # bucket j = the j-th shard by rows
                ks = sorted(ks, key=lambda k: slots[k].row_start)
            for j, k in enumerate(ks):
                slot_of[f, j] = k
                if split:
                    row_start[f, j] = bucket_start[f, j] = slots[k].row_start
            copies.append(1 if split else len(ks))
        self.copies = copies
        self.replicates = any(c > 1 for c in copies)
        self.any_row_split = bool(row_split.any())
        self.register_buffer("slot_of", slot_of, persistent=False)
        self.register_buffer("row_start", row_start, persistent=False)
        self.register_buffer("bucket_start", bucket_start, persistent=False)
        self.register_buffer("row_split", row_split, persistent=False)
        self.register_buffer("copies_t", torch.tensor(copies, dtype=torch.int64), persistent=False)
        self.register_buffer("slot_rank", torch.tensor([s.rank for s in slots], dtype=torch.int64), persistent=False)
        routed = [k for k, s in enumerate(slots) if s.routed]
        self.any_routed = bool(routed)
        self.routed_span = max(rows, default=1) + 1  # (slot, id) pairs of routed ids as one int64: slot * span + id
        self.register_buffer("routed_slots", torch.tensor(routed, dtype=torch.int64), persistent=False)
        self.register_buffer("is_routed", torch.tensor([s.routed for s in slots], dtype=torch.bool), persistent=False)
        self._packings: dict[int, LengthsPacking] = {}

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Route the rank's batch; return this rank's local features for the global batch.

        Args:
            kjt: the rank's batch with exactly the collection's features, in order (stride ``B``).

        Returns:
            KeyedJaggedTensor with keys ``local_features``, stride ``world_size * B``, int64
            lengths and ids, fp32 weights if any rank sent weights, else none.
        """
        return self.start(kjt).wait()

    def start(self, kjt: KeyedJaggedTensor) -> PendingInput:
        """Check and bucketize the ids, exchange the lengths, and launch the ids (and weights) all-to-all.

        Collective: every rank calls it, in the same order relative to its other collectives. The
        lengths all-to-all completes here (its result sizes the ids' transfer: one host read); the
        ids and weights all-to-alls are in flight when it returns.

        Args:
            kjt: the rank's batch with exactly the collection's features, in order (stride ``B``).

        Returns:
            The input dist in flight; ``wait()`` gives what ``forward`` returns.

        Example:
            >>> pending = route.start(kjt)  # doctest: +SKIP
            >>> # other work while the ids travel
            >>> local = pending.wait()  # doctest: +SKIP
        """
        world, batch, device = self.world_size, kjt.stride(), kjt.device()
        values, weights, lengths, keys = self._bucketize(kjt)
        num_slots = len(self.slot_rank)
        kept = None
        if self.any_routed:  # each distinct id of a routed slot once; what the batch's ids were, kept to pool
            values, weights, lengths, kept = self._distinct_routed(values, weights, keys, batch)
        per_slot = lengths.view(num_slots, batch).sum(dim=1)
        per_rank = torch.zeros(world, dtype=torch.int64, device=device).index_add_(
            0, self.slot_rank, per_slot) if num_slots else None
        pieces = [per_rank, per_slot.index_select(0, self.routed_slots)]
        if kept is not None:
            pieces.append(kept[3])
        host_counts = torch.cat(pieces).tolist() if per_rank is not None else [0] * world  # one host read for all
        send_ids = host_counts[:world]
        routed = None
        if kept is not None:
            n = len(self.routed_slots)
            routed = RoutedIds(kept[0], kept[1], host_counts[world:world + n], host_counts[world + n:], kept[2])

        # 1. lengths, each destination's block led by a "sender has weights" flag (a routed slot: its count).
        flag = torch.full((1,), 1 if weights is not None else 0, dtype=torch.int64, device=device)
        own = len(self.local_features)
        if self.any_routed:
            pack = self._packing(batch, device)
            recv = all_to_all_1d(pack.send(flag, lengths, per_slot), pack.send_splits, pack.recv_splits,
                                 self.group).view(world, pack.width)
            recv_lengths = pack.unpack(recv)
        else:
            pieces, start = [], 0
            for count in self.slots_per_rank:
                pieces += [flag, lengths[start * batch:(start + count) * batch]]
                start += count
            recv = all_to_all_1d(torch.cat(pieces), [1 + c * batch for c in self.slots_per_rank],
                                 [1 + own * batch] * world, self.group).view(world, 1 + own * batch)
            recv_lengths = recv[:, 1:]
        counts = recv_lengths.reshape(world, own, batch).sum(dim=2)  # [source, local feature]
        host = torch.cat([recv[:, 0], counts.reshape(-1)]).tolist()
        any_weights = any(host[:world])
        counts_host = host[world:]
        recv_ids = [sum(counts_host[s * own:(s + 1) * own]) for s in range(world)]

        fault_point("input_dist")  # failure tests only (RECFRAME_FAULT); a no-op otherwise

        # 2. ids, 3. weights (only if some rank has them; the others send ones): launched, not awaited.
        recv_values, values_work = start_all_to_all_1d(values, send_ids, recv_ids, self.group)
        weights_in_flight = None
        if any_weights:
            send_weights = weights if weights is not None else torch.ones(values.numel(), device=device)
            weights_in_flight = start_all_to_all_1d(send_weights, send_ids, recv_ids, self.group)
        return PendingInput(self.local_features, self.receive_order, batch, world, recv_lengths.reshape(-1),
                            counts_host, (recv_values, values_work), weights_in_flight, routed)

    def _packing(self, batch: int, device: torch.device) -> LengthsPacking:
        """The lengths all-to-all's layout with routed slots, for local batch size ``batch`` (cached)."""
        if batch not in self._packings:
            self._packings[batch] = LengthsPacking(self.slot_rank.tolist(), self.is_routed.tolist(), self.rank,
                                                   self.world_size, batch, device)
        return self._packings[batch]

    def _distinct_routed(self, values: torch.Tensor, weights: torch.Tensor | None, keys: torch.Tensor, batch: int
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, tuple]:
        """Replace the ids of every routed slot by its distinct ids, once each, in increasing order.

        A routed shard returns one row per id it receives; the sample's rank pools them. Sending each distinct id
        once (and expanding its row on return, ``RoutedIds.inverse``) makes a hot id cost one row a rank and step,
        not one row per occurrence. The distinct ids travel with weight 1 (a routed shard does not weight; the
        sender applies the weights when it pools).

        Args:
            values: ``_bucketize``'s ids (by ``(slot, sample)``).
            weights: their weights, or None.
            keys: their ``slot * B + sample``, sorted.
            batch: the local batch size ``B``.

        Returns:
            ``(values, weights, lengths, kept)``: the ids to send, sorted by slot (a routed slot's ids counted in
            its first bag), their weights, ``[slots * B]`` lengths, and ``kept``: the batch's routed ids' samples,
            weights, rows among their slot's distinct ids (``RoutedIds``), and ``[routed slots]`` their counts.
        """
        num_slots, device = len(self.slot_rank), values.device
        slot = torch.div(keys, max(batch, 1), rounding_mode="floor")
        to_routed = self.is_routed.index_select(0, slot)
        routed_ids, routed_slot = values[to_routed], slot[to_routed]
        span = self.routed_span
        distinct, inverse = torch.unique(routed_slot * span + routed_ids, sorted=True, return_inverse=True)
        distinct_slot = torch.div(distinct, span, rounding_mode="floor")
        per_slot = torch.bincount(distinct_slot, minlength=num_slots)
        first = torch.cumsum(per_slot, 0) - per_slot
        kept = (keys[to_routed] % max(batch, 1), None if weights is None else weights[to_routed],
                inverse - first.index_select(0, routed_slot),
                torch.bincount(routed_slot, minlength=num_slots).index_select(0, self.routed_slots))
        other = ~to_routed
        key = torch.cat([keys[other], distinct_slot * batch])
        key_sorted, order = torch.sort(key, stable=True)  # a routed slot's distinct ids stay in increasing order
        values = torch.cat([values[other], distinct - distinct_slot * span]).index_select(0, order)
        if weights is not None:
            weights = torch.cat([weights[other], torch.ones(distinct.numel(), device=device)]).index_select(0, order)
        lengths = torch.bincount(key_sorted, minlength=num_slots * batch) if batch > 0 else key_sorted.new_zeros(0)
        return values, weights, lengths, kept

    def _bucketize(self, kjt: KeyedJaggedTensor
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Step 1: checked (or hashed) ids sorted by ``(slot, sample)``, their weights, the lengths per slot.

        Args:
            kjt: the rank's batch with exactly the collection's features, in order (stride ``B``).

        Returns:
            ``(values, weights, lengths, keys)``: ids in each slot's own row numbers, fp32 weights (or
            None), ``[slots * B]`` int64 lengths, and each id's ``slot * B + sample``.
        """
        batch, device = kjt.stride(), kjt.device()
        num_slots = len(self.slot_rank)
        if batch > 0:
            ids, _, weights = self.ids(kjt)
        else:
            ids, weights = kjt.values().long(), kjt.weights_or_none()
        lengths_in = kjt.lengths().long()
        num_ids = ids.numel()
        bag = torch.arange(lengths_in.numel(), device=device).repeat_interleave(lengths_in, output_size=num_ids)
        feature = torch.div(bag, batch, rounding_mode="floor") if batch > 0 else bag
        sample = bag - feature * batch
        if weights is not None:
            weights = weights.float()
        if self.replicates:  # ids of replicated features (column_wise, data_parallel) go to every shard
            copies = self.copies_t.index_select(0, feature)
            total = sum(c * n for c, n in zip(self.copies, kjt.length_per_key(), strict=True))
            source = torch.arange(num_ids, device=device).repeat_interleave(copies, output_size=total)
            first = torch.cumsum(copies, 0) - copies
            copy = torch.arange(total, device=device) - first.index_select(0, source)
            ids, feature, sample = ids.index_select(0, source), feature.index_select(0, source), sample.index_select(
                0, source)
            weights = None if weights is None else weights.index_select(0, source)
        else:
            copy = torch.zeros_like(ids)
        if self.any_row_split:
            starts = self.bucket_start.index_select(0, feature)
            bucket = ((ids.unsqueeze(1) >= starts).sum(dim=1) - 1).clamp_(min=0)
            copy = torch.where(self.row_split.index_select(0, feature), bucket, copy)
        slot = self.slot_of[feature, copy]
        local_ids = ids - self.row_start[feature, copy]
        key = slot * batch + sample
        key_sorted, order = torch.sort(key, stable=True)
        values = local_ids.index_select(0, order)
        weights = None if weights is None else weights.index_select(0, order)
        lengths = torch.bincount(key_sorted, minlength=num_slots * batch) if batch > 0 else key_sorted.new_zeros(0)
        return values, weights, lengths, key_sorted

"""An input dist in flight (``PendingInput``) and what a rank sent to routed slots (``RoutedIds``).

``InputDist.start`` (``input_dist.py``) exchanges the lengths and launches the ids' (and weights')
all-to-alls; it returns a ``PendingInput`` whose ``wait()`` gives the rank's local KeyedJaggedTensor.
Kept apart from ``input_dist.py`` so each file holds one idea: starting the exchange there, finishing it here.

Example:
    >>> local = route.start(kjt).wait()  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from recframe.sparse import KeyedJaggedTensor, ops


@dataclass
class RoutedIds:
    """What a rank sent to routed slots (``Slot.routed``): what it needs to pool the rows coming back.

    A rank sends each distinct id of a routed slot once a step (its rows come back once), in increasing order;
    ``inverse`` gives every id of its batch its distinct row, so the rank expands the rows before pooling them
    (and autograd sums the gradients of an id's repeats into its row's gradient, which goes back once).

    Args:
        samples: ``[n]`` the sample (``0 .. B-1``) of each id of the batch in a routed slot, by slot, then sample
            (ids keeping their order inside a bag).
        weights: ``[n]`` fp32 per-id weights of those ids, or None (no weights on this rank).
        counts: the number of distinct ids sent to each routed slot, routed slots in slot order (host integers).
        ids: the number of the batch's ids of each routed slot (``samples`` split by slot; host integers).
        inverse: ``[n]`` for each of those ids, its row among its slot's distinct ids.
    """

    samples: torch.Tensor
    weights: torch.Tensor | None
    counts: list[int]
    ids: list[int]
    inverse: torch.Tensor



class PendingInput:
    """An input dist in flight: the received lengths, and the ids (and weights) all-to-alls launched.

    Made by ``InputDist.start``; ``wait()`` finishes it.

    Args:
        local_features: this rank's local features, in slot order.
        receive_order: the result's keys, as positions in ``local_features``.
        batch: the local batch size ``B`` of every rank.
        world: the number of ranks.
        recv_lengths: ``[world * len(local_features) * B]`` lengths, in ``(source rank, feature)`` blocks.
        counts: the number of ids of each ``(source rank, feature)`` block (host integers).
        values: the ids' output buffer and its all-to-all's Work.
        weights: the weights' output buffer and Work, or None when no rank sent weights.
        routed: what this rank sent to routed slots (None: the collection has none).

    Example:
        >>> local = route.start(kjt).wait()  # doctest: +SKIP
    """

    def __init__(self, local_features: list[str], receive_order: list[int], batch: int, world: int,
                 recv_lengths: torch.Tensor, counts: list[int], values: tuple[torch.Tensor, dist.Work],
                 weights: tuple[torch.Tensor, dist.Work] | None, routed: RoutedIds | None = None) -> None:
        self.local_features, self.receive_order, self.batch, self.world = local_features, receive_order, batch, world
        self.recv_lengths, self.counts, self.routed = recv_lengths, counts, routed
        self._values, self._weights = values, weights

    def wait(self) -> KeyedJaggedTensor:
        """Wait for the ids and weights, reorder the blocks by feature (``receive_order``): the local KeyedJaggedTensor.

        Returns:
            KeyedJaggedTensor with keys ``local_features``, stride ``world * B`` (see ``InputDist.forward``).
        """
        recv_values, work = self._values
        work.wait()
        recv_weights = None
        if self._weights is not None:
            recv_weights, weights_work = self._weights
            weights_work.wait()
        if recv_values.is_cuda:  # started on another stream (the prefetcher's): the allocator must wait for this one
            stream = torch.cuda.current_stream(recv_values.device)
            routed = (self.routed.samples, self.routed.weights, self.routed.inverse) if self.routed is not None else ()
            for t in (self.recv_lengths, recv_values, recv_weights, *routed):
                if t is not None:
                    t.record_stream(stream)
        world, own, batch, counts = self.world, len(self.local_features), self.batch, self.counts
        # (source, feature) blocks -> (feature, source): one key per local feature, stride world * B.
        block_offsets = [0]
        for n in counts:
            block_offsets.append(block_offsets[-1] + n)
        order_blocks = [s * own + f for f in self.receive_order for s in range(world)]
        out_lengths, out_values, out_weights = ops.permute_key_blocks(
            order_blocks, self.recv_lengths, recv_values, recv_weights, batch, block_offsets)
        per_key = [sum(counts[s * own + f] for s in range(world)) for f in self.receive_order]
        return KeyedJaggedTensor([self.local_features[f] for f in self.receive_order], out_values,
                                 weights=out_weights, lengths=out_lengths, stride=world * batch, validate=False,
                                 length_per_key=per_key)

"""Collectives of the sharded embedding modules, built only on ``torch.distributed``.

Everything here runs unchanged on gloo (CPU processes) and NCCL (GPUs): tensors stay on the
device of their inputs, split sizes are host lists, and only ``all_to_all_single`` (with uneven
splits) and ``broadcast`` are used, both of which gloo and NCCL implement (the data_parallel
replicas' ``all_reduce`` is in ``replicas.py``).

- :func:`all_to_all_1d`: an uneven all-to-all of a flat tensor, no autograd (the ids, lengths
  and per-id weights of the input dist carry no gradient); :func:`start_all_to_all_1d` launches
  the same with ``async_op=True`` and returns torch.distributed's ``Work`` with the output buffer
  (read the buffer only after ``Work.wait()``).
- :class:`PendingPooled`: the output dist, two autograd nodes. Forward: each rank's pooled
  model-parallel outputs for the whole global batch ``[world * B, D_r]`` are cut into ``world``
  row blocks and block ``s`` goes to rank ``s``, as its exchange packs them
  (``node_reduce.FlatExchange``: a partial sum of a row-split table travels like any other block;
  the receiver adds the partial sums, so the all-to-all plus that sum is the reduce-scatter of
  row-wise sharding; ``node_reduce.NodeReduceExchange``: table_row_wise partial sums are first
  reduce-scattered inside the node, and one rank sends each destination the sum); the data-parallel
  outputs (each replica pooled the rank's own samples) stay on the rank and are appended. The
  all-to-all is launched asynchronously and waited for only by ``wait()`` (the model's first read of
  the pooled values), so dense work runs while the rows travel. Backward: one all-to-all that returns
  each block's gradient to the rank that computed it (a node-reduced block: to its sender, then
  all-gathered inside the node), launched as soon as the gradient of the received blocks is known and waited
  for only when the lookups' backward needs it; the data-parallel gradient stays on the rank
  (``replicas.ReplicaSync`` sums the replicas' row gradients with one all-reduce). One collective
  forward, one backward, for the whole collection (plus, with a node reduce, one reduce-scatter forward
  and one all-gather backward per group of table_row_wise ranks, inside the node); none when no rank
  has a model-parallel output (every table data_parallel).

Gradient scaling: ``grad_scale`` multiplies every gradient the output dist sends back (the sharded
module passes ``1 / world`` so that, with a per-rank mean loss, embedding updates equal those of
one process training on the concatenated global batch with a mean loss, as DDP's averaging does
for the dense parameters).

Example (one process, world of 1):
    >>> import os, tempfile, torch, torch.distributed as dist
    >>> store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    >>> all_to_all_1d(torch.arange(3), [3], [3], None).tolist()
    [0, 1, 2]
    >>> dist.destroy_process_group()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from recframe.distributed.qcomms import CommsPrecision, PendingFloats, start_all_to_all_float

if TYPE_CHECKING:
    from recframe.distributed.node_reduce import FlatExchange


def all_to_all_1d(send: torch.Tensor, send_splits: list[int], recv_splits: list[int],
                  group: dist.ProcessGroup | None) -> torch.Tensor:
    """Send ``send_splits[d]`` entries of the flat ``send`` to rank ``d``; receive ``recv_splits[s]`` from ``s``.

    Args:
        send: 1-D tensor; its entries for rank 0 first, then rank 1, ...
        send_splits: entries for each rank (sum = ``send.numel()``).
        recv_splits: entries from each rank (what they send to this one).
        group: the process group (None = the default group).

    Returns:
        1-D tensor of ``sum(recv_splits)`` entries, rank 0's first; same dtype and device as ``send``.
    """
    out, work = start_all_to_all_1d(send, send_splits, recv_splits, group)
    work.wait()
    return out


def start_all_to_all_1d(send: torch.Tensor, send_splits: list[int], recv_splits: list[int],
                        group: dist.ProcessGroup | None) -> tuple[torch.Tensor, dist.Work]:
    """Launch :func:`all_to_all_1d` asynchronously: the output buffer and the collective's ``Work``.

    The buffer holds the result once ``work.wait()`` returned (on CUDA: the current stream waits
    for the collective; on gloo: the host waits). Every rank must launch its collectives in the
    same order, as for the blocking call.

    Args:
        send: 1-D tensor; its entries for rank 0 first, then rank 1, ...
        send_splits: entries for each rank (sum = ``send.numel()``).
        recv_splits: entries from each rank (what they send to this one).
        group: the process group (None = the default group).

    Returns:
        ``(out, work)``: the 1-D output of ``sum(recv_splits)`` entries and the collective's Work.

    Example (inside a process group of one):
        >>> out, work = start_all_to_all_1d(torch.arange(3), [3], [3], None)  # doctest: +SKIP
        >>> work.wait(); out.tolist()  # doctest: +SKIP
        [0, 1, 2]
    """
    out = torch.empty(sum(recv_splits), dtype=send.dtype, device=send.device)
    work = dist.all_to_all_single(out, send.contiguous(), output_split_sizes=list(recv_splits),
                                  input_split_sizes=list(send_splits), group=group, async_op=True)
    return out, work


class PendingPooled:
    """The output dist in flight: its forward all-to-all launched, its result read by :meth:`wait`.

    ``PendingPooled(anchor, mp, dp, batch, exchange, group, grad_scale, precision)`` launches
    the forward all-to-all (``async_op``) through the autograd node ``_PooledStart``; :meth:`wait`
    waits for it and builds the received ``[batch, sum(exchange.recv_widths) + D_dp]`` through ``_PooledWait``.
    A node reduce (``exchange.pack``, ``exchange.unpack_grad``) runs its intra-node collectives blocking,
    inside ``_PooledStart`` (before the launch forward, after the wait backward).
    Work done between the two (a model's bottom MLP) runs while the pooled rows travel.

    Backward mirrors it (the two nodes split what one Function would do): ``_PooledWait``'s backward
    launches the gradients' all-to-all and returns at once; ``_PooledStart``'s backward waits for it
    and hands each block's gradient to the lookups. The autograd engine runs the ready node with the
    highest sequence number first (nodes are numbered in creation order), so the nodes made between
    the start and the wait in forward (the bottom MLP) run in backward between the launch and the
    wait (tests/distributed/test_overlap.py records that order). Both collectives are issued at the
    same program point on every rank (the forward one in the sharded forward, the backward one when
    the engine reaches ``_PooledWait``, whose place in the graph is the same on every rank), so the
    ranks issue their collectives in one order, as with the blocking call.

    Args:
        anchor: an empty tensor that requires grad: it makes the backward run on every rank, even
            on one whose ``mp`` and ``dp`` need no gradient (a rank without tables must still take
            part in the backward all-to-all).
        mp: ``[world * batch, D_r]`` this rank's model-parallel outputs, rows of rank
            ``s``'s samples at ``s * batch ...``.
        dp: ``[batch, D_dp]`` this rank's data-parallel outputs (its own samples).
        batch: local batch size ``B`` (the same on every rank).
        exchange: what this rank sends to and receives from each rank (``node_reduce``).
        group: the process group.
        grad_scale: factor applied to the gradients sent back (``1 / world`` for mean losses).
        precision: the wire formats forward and backward (``qcomms.CommsPrecision``; fp32: exact).

    Example:
        >>> pending = PendingPooled(anchor, mp, dp, batch, exchange, None, 0.5, CommsPrecision())  # doctest: +SKIP
        >>> dense = bottom_mlp(x)  # runs while the all-to-all travels  # doctest: +SKIP
        >>> wide = pending.wait()  # [batch, sum(exchange.recv_widths) + D_dp]  # doctest: +SKIP
    """

    def __init__(self, anchor: torch.Tensor, mp: torch.Tensor, dp: torch.Tensor, batch: int,
                 exchange: FlatExchange, group: dist.ProcessGroup | None, grad_scale: float,
                 precision: CommsPrecision) -> None:
        # The nodes share a _Slot (the gradients' all-to-all in flight), never this object: it holds the
        # start node's output until wait(), and a node holding it back would be a cycle through C++.
        slot = _Slot(batch, exchange, group, grad_scale, precision)
        self._forward: PendingFloats | None = None
        self._placeholder = _PooledStart.apply(anchor, mp, self, slot)
        self._dp, self._slot = dp, slot
        self._result: torch.Tensor | None = None

    def launched(self, pending: PendingFloats | None) -> None:
        """Called by ``_PooledStart.forward`` with the forward all-to-all in flight (None: nothing travels)."""
        self._forward = pending

    def wait(self) -> torch.Tensor:
        """The received ``[batch, sum(exchange.recv_widths) + D_dp]`` (rank 0's block, rank 1's, ..., then ``dp``);
        waits once."""
        if self._result is None:
            self._result = _PooledWait.apply(self._placeholder, self._dp, self._forward, self._slot)
            self._placeholder = self._dp = self._forward = self._slot = None
        return self._result


class _Slot:
    """What the two nodes of one output dist share: its shape, and the gradients' all-to-all in flight."""

    def __init__(self, batch: int, exchange: FlatExchange, group: dist.ProcessGroup | None,
                 grad_scale: float, precision: CommsPrecision) -> None:
        self.batch, self.exchange, self.group = batch, exchange, group
        self.grad_scale, self.precision = grad_scale, precision
        self.grad: PendingFloats | None = None


class _PooledStart(torch.autograd.Function):
    """Forward: launch the pooled all-to-all, return an empty placeholder. Backward: wait for the gradients'."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, mp: torch.Tensor, pending: PendingPooled,  # noqa: ANN001
                slot: _Slot) -> torch.Tensor:
        ctx.slot = slot
        batch, exchange = slot.batch, slot.exchange
        launched = None
        if exchange.active:  # else every table is data_parallel: nothing travels
            launched = start_all_to_all_float(exchange.pack(mp, batch), [batch * w for w in exchange.send_widths],
                                              [batch * w for w in exchange.recv_widths], slot.group,
                                              slot.precision.forward)
        pending.launched(launched)
        return anchor.new_empty(0)

    @staticmethod
    def backward(ctx, _: torch.Tensor):  # noqa: ANN001, ANN205
        slot, grad_mp = ctx.slot, None
        if slot.grad is not None:
            recv = slot.grad.wait()
            slot.grad = None
            grad_mp = slot.exchange.unpack_grad(recv, slot.batch)  # collective with a node reduce: always
            if not ctx.needs_input_grad[1]:
                grad_mp = None
        return None, grad_mp, None, None


class _PooledWait(torch.autograd.Function):
    """Forward: wait for the pooled all-to-all, return the blocks and ``dp``. Backward: launch the gradients'."""

    @staticmethod
    def forward(ctx, placeholder: torch.Tensor, dp: torch.Tensor, pending: PendingFloats | None,  # noqa: ANN001
                slot: _Slot) -> torch.Tensor:
        ctx.slot, ctx.dp_dim = slot, dp.shape[1]
        if pending is None:
            return dp.clone()
        batch, widths = slot.batch, slot.exchange.recv_widths
        recv = pending.wait()
        blocks = [b.view(batch, d) for b, d in zip(recv.split([batch * d for d in widths]), widths, strict=True)]
        blocks.append(dp)
        return torch.cat(blocks, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        slot = ctx.slot
        batch, exchange = slot.batch, slot.exchange  # grad: the output's dtype (16-bit: OutputDist.exact_in_16_bit)
        if slot.grad_scale != 1.0:
            grad = grad * slot.grad_scale
        pieces = grad.split([*exchange.recv_widths, ctx.dp_dim], dim=1)
        if exchange.active:
            send = torch.cat([piece.reshape(-1) for piece in pieces[:-1]])
            slot.grad = start_all_to_all_float(send, [batch * w for w in exchange.recv_widths],
                                               [batch * w for w in exchange.send_widths], slot.group,
                                               slot.precision.backward)
        grad_dp = pieces[-1] if ctx.needs_input_grad[1] else None
        return grad.new_zeros(0), grad_dp, None, None


def broadcast_(tensor: torch.Tensor, src_group_rank: int, group: dist.ProcessGroup | None) -> None:
    """Overwrite ``tensor`` (in place, any layout) with group rank ``src_group_rank``'s copy.

    Args:
        tensor: the tensor to synchronize.
        src_group_rank: the source, as a rank of ``group``.
        group: the process group (None = the default group).
    """
    src = src_group_rank if group is None else dist.get_global_rank(group, src_group_rank)
    buffer = tensor.contiguous()
    dist.broadcast(buffer, src=src, group=group)
    if buffer.data_ptr() != tensor.data_ptr():
        tensor.copy_(buffer)

"""Collectives of the sharded embedding modules, built only on ``torch.distributed``.

Everything here runs unchanged on gloo (CPU processes) and NCCL (GPUs): tensors stay on the
device of their inputs, split sizes are host lists, and only ``all_to_all_single`` (with uneven
splits) and ``broadcast`` are used, both of which gloo and NCCL implement (the data_parallel
replicas' ``all_reduce`` is in ``replicas.py``).

- :func:`all_to_all_1d`: an uneven all-to-all of a flat tensor, no autograd (the ids, lengths
  and per-id weights of the input dist carry no gradient); :func:`start_all_to_all_1d` launches
  the same with ``async_op=True`` and returns torch.distributed's ``Work`` with the output buffer
  (read the buffer only after ``Work.wait()``).
- :class:`PooledAllToAll`: the output dist, an autograd Function. Forward: each rank's pooled
  model-parallel outputs for the whole global batch ``[world * B, D_r]`` are cut into ``world``
  row blocks and block ``s`` goes to rank ``s`` (a partial sum of a row-split table travels like
  any other block; the receiver adds the partial sums, so the all-to-all plus that sum is the
  reduce-scatter of row-wise sharding); the data-parallel outputs (each replica pooled the rank's
  own samples) stay on the rank and are appended. Backward: one all-to-all that returns each
  block's gradient to the rank that computed it; the data-parallel gradient stays on the rank
  (``replicas.ReplicaSync`` sums the replicas' row gradients with one all-reduce). One collective
  forward, one backward, for the whole collection; none when no rank has a model-parallel output
  (every table data_parallel).

Gradient scaling: ``grad_scale`` multiplies every gradient the Function sends back (the sharded
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

import torch
import torch.distributed as dist

from recframe.distributed.qcomms import CommsPrecision, all_to_all_float


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


class PooledAllToAll(torch.autograd.Function):
    """The output dist of pooled embeddings (see the module docstring).

    ``apply(anchor, mp, dp, batch, mp_dims, rank, group, grad_scale, precision)``:

    Args:
        anchor: an empty tensor that requires grad: it makes the backward run on every rank, even
            on one whose ``mp`` and ``dp`` need no gradient (a rank without tables must still take
            part in the backward all-to-all).
        mp: ``[world * batch, mp_dims[rank]]`` this rank's model-parallel outputs, rows of rank
            ``s``'s samples at ``s * batch ...``.
        dp: ``[batch, D_dp]`` this rank's data-parallel outputs (its own samples).
        batch: local batch size ``B`` (the same on every rank).
        mp_dims: model-parallel output width of every rank.
        rank: this rank in ``group``.
        group: the process group.
        grad_scale: factor applied to the gradients sent back (``1 / world`` for mean losses).
        precision: the wire formats forward and backward (``qcomms.CommsPrecision``; fp32: exact).

    Returns:
        ``[batch, sum(mp_dims) + D_dp]``: rank 0's block for this rank's samples, then rank 1's,
        ..., then ``dp``.
    """

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, mp: torch.Tensor, dp: torch.Tensor, batch: int,  # noqa: ANN001
                mp_dims: list[int], rank: int, group: dist.ProcessGroup | None, grad_scale: float,
                precision: CommsPrecision) -> torch.Tensor:
        world = len(mp_dims)
        own = mp_dims[rank]
        ctx.batch, ctx.mp_dims, ctx.rank, ctx.group, ctx.grad_scale = batch, mp_dims, rank, group, grad_scale
        ctx.dp_dim, ctx.precision = dp.shape[1], precision
        if not any(mp_dims):  # every table data_parallel: nothing travels
            return dp.clone()
        recv = all_to_all_float(mp.reshape(-1), [batch * own] * world, [batch * d for d in mp_dims], group,
                                precision.forward)
        blocks = [b.view(batch, d) for b, d in zip(recv.split([batch * d for d in mp_dims]), mp_dims, strict=True)]
        blocks.append(dp)
        return torch.cat(blocks, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        batch, mp_dims, rank, world = ctx.batch, ctx.mp_dims, ctx.rank, len(ctx.mp_dims)
        own, dp_dim = mp_dims[rank], ctx.dp_dim
        grad = grad.float()
        if ctx.grad_scale != 1.0:
            grad = grad * ctx.grad_scale
        pieces = grad.split([*mp_dims, dp_dim], dim=1)
        grad_mp = grad_dp = None
        if ctx.needs_input_grad[2]:
            grad_dp = pieces[-1]
        if any(mp_dims):
            send = torch.cat([pieces[s].reshape(-1) for s in range(world)])
            recv = all_to_all_float(send, [batch * d for d in mp_dims], [batch * own] * world, ctx.group,
                                    ctx.precision.backward)
            if ctx.needs_input_grad[1]:
                grad_mp = recv.view(world * batch, own)
        return None, grad_mp, grad_dp, None, None, None, None, None, None


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

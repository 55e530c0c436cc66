"""Quantized communication of the pooled all-to-alls: fp32 values sent as bf16 or fp16, received as fp32.

``sharding.comms.forward_dtype`` (the pooled embeddings, and the partial sums of row-wise splits)
and ``sharding.comms.backward_dtype`` (their gradients) pick the wire format of
``comms.PendingPooled``; fp32 is exact and the default. Halving the bytes halves the all-to-all
time where it is bandwidth-bound (NCCL across GPUs); values are rounded once, on the wire:

- ``bf16``: 8 significant bits (relative error <= 2^-8), fp32's range: no scaling needed.
- ``fp16``: 11 significant bits (<= 2^-11) but a range of +-65504, and values below ~6e-8 vanish. Each rank
  scales what it sends by a power of two that brings its largest magnitude into (2^14, 2^15]
  (exact in binary; overflow is impossible and small gradients keep their bits), sends its scale
  to every rank (one all-gather of one float), and each receiver divides each sender's block by
  that sender's scale.

Errors against fp32 (tests/distributed/test_qcomms.py): each value within 2^-8 of itself (bf16), or
within 2^-11 of its sender's largest magnitude (fp16: values far below the largest lose bits, down to
nothing below 2^-24 of it); a sharded collection trained 3 steps stays within 8 roundings of fp32's
weights; bf16 comms end 2-process ``dlrm`` training with the val AUC of fp32 within 0.001 (slow tier).

Example (one process, world of 1):
    >>> import os, tempfile, torch, torch.distributed as dist
    >>> store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    >>> all_to_all_float(torch.tensor([2.0**20, 3.0]), [2], [2], None, "fp16").tolist()  # 2^20 overflows fp16
    [1048576.0, 3.0]
    >>> dist.destroy_process_group()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from recframe.distributed import comms  # (comms imports this module: read its names at call time)
from recframe.vocab import CommsDtype

WIRE = {CommsDtype.bf16: torch.bfloat16, CommsDtype.fp16: torch.float16}
FP16_TOP = 2.0**15  # fp16 scaling brings the largest magnitude into (2^14, 2^15]


@dataclass(frozen=True)
class CommsPrecision:
    """The wire formats of the pooled all-to-all (``sharding.comms``).

    Args:
        forward: the pooled embeddings' format.
        backward: their gradients' format.
    """

    forward: CommsDtype = CommsDtype.fp32
    backward: CommsDtype = CommsDtype.fp32


def fp16_scale(values: torch.Tensor) -> torch.Tensor:
    """The power of two (a 1-element fp32 tensor, on the device: no host read) that brings ``values``' largest
    magnitude into (2^14, 2^15]; 1 for all-zero values."""
    top = values.abs().amax() if values.numel() else values.new_zeros(())
    scale = torch.exp2(torch.floor(torch.log2(FP16_TOP / top.float().clamp(min=1e-30))))
    return torch.where(top > 0, scale.clamp(max=2.0**100), torch.ones_like(scale)).reshape(1)


def all_to_all_float(send: torch.Tensor, send_splits: list[int], recv_splits: list[int],
                     group: dist.ProcessGroup | None, dtype: CommsDtype | str) -> torch.Tensor:
    """``comms.all_to_all_1d`` of fp32 values sent in ``dtype`` (fp32 | bf16 | fp16); returns fp32 (a 16-bit
    ``send`` on the fp32 wire travels and returns as it is: its values are exact in its dtype).

    Args:
        send: 1-D float tensor; its entries for rank 0 first, then rank 1, ...
        send_splits: entries for each rank.
        recv_splits: entries from each rank.
        group: the process group (None = the default group).
        dtype: the wire format (collective: every rank must pass the same).
    """
    return start_all_to_all_float(send, send_splits, recv_splits, group, dtype).wait()


class PendingFloats:
    """An :func:`all_to_all_float` in flight (made by :func:`start_all_to_all_float`); ``wait()`` gives its fp32 result
    (16-bit where 16-bit values were sent on an fp32 wire).

    It holds the send buffer until the collective is done. ``wait()`` may be called more than once (the
    first call waits; the others return the same tensor).
    """

    def __init__(self, send: torch.Tensor, recv: torch.Tensor, work: dist.Work, divisor: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32) -> None:
        self._send, self._recv, self._work, self._divisor, self._dtype = send, recv, work, divisor, dtype
        self._result: torch.Tensor | None = None

    def wait(self) -> torch.Tensor:
        if self._result is None:
            self._work.wait()  # a failed or timed-out collective raises here, as the blocking call would
            received = self._recv.to(self._dtype)
            self._result = received if self._divisor is None else received / self._divisor
            self._send = self._recv = self._work = self._divisor = None
        return self._result


def start_all_to_all_float(send: torch.Tensor, send_splits: list[int], recv_splits: list[int],
                           group: dist.ProcessGroup | None, dtype: CommsDtype | str) -> PendingFloats:
    """Launch :func:`all_to_all_float` asynchronously (``async_op``); read its result with ``wait()``.

    Collective, in the same order on every rank as the blocking call: fp16 first all-gathers the
    senders' scales (blocking, one float each), then launches the all-to-all. Args as :func:`all_to_all_float`.

    Example (inside a process group of one):
        >>> pending = start_all_to_all_float(torch.ones(2), [2], [2], None, "bf16")  # doctest: +SKIP
        >>> pending.wait().tolist()  # doctest: +SKIP
        [1.0, 1.0]
    """
    dtype = CommsDtype(dtype)
    divisor, result = None, torch.float32
    if dtype == CommsDtype.fp32:  # 16-bit values (autocast's pooled outputs) travel and arrive as they are: exact
        wire = send if send.dtype in (torch.bfloat16, torch.float16) else send.float()
        result = wire.dtype
    elif dtype == CommsDtype.bf16:
        wire = send.to(torch.bfloat16)
    else:
        scale = fp16_scale(send)
        scales = [torch.empty_like(scale) for _ in recv_splits]
        dist.all_gather(scales, scale, group=group)
        wire = (send.float() * scale).to(torch.float16)
        divisor = torch.cat([s.expand(n) for s, n in zip(scales, recv_splits, strict=True)])  # (no host sync)
    wire = wire.contiguous()
    recv, work = comms.start_all_to_all_1d(wire, send_splits, recv_splits, group)
    return PendingFloats(wire, recv, work, divisor, result)

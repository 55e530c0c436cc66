"""The ``@triton.jit`` kernel of ``FusedAdagrad`` (recframe.training.fused_adagrad): dense Adagrad on many tensors
in one launch.

Each program updates ``BLOCK`` consecutive elements of one tensor. ``tensors`` is an int64 ``[n, 4]`` table of
(parameter address, gradient address, state-sum address, element count), and each program finds its tensor and
first element in ``block_tensor`` / ``block_start``. Per element, as ``torch.optim.Adagrad`` (``lr_decay`` 0,
``maximize`` off): ``g += weight_decay * p``; ``sum += g * g``; ``p -= lr * g / (sqrt(sum) + eps)``, one read of
``p``, ``g`` and ``sum`` and one write of ``p`` and ``sum`` (torch's multi-tensor path passes over them four times),
in fp32 with IEEE square root and division. Runs under Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors.

Example:
    >>> adagrad_update[(blocks,)](tensors, block_tensor, block_start, 0.01, 1e-8, 0.0,  # doctest: +SKIP
    ...                           HAS_WEIGHT_DECAY=False, BLOCK=BLOCK)
"""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 2048  # elements per program


@triton.jit
def adagrad_update(tensors, block_tensor, block_start, lr, eps, weight_decay,
                   HAS_WEIGHT_DECAY: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    row = tl.load(block_tensor + pid).to(tl.int64) * 4
    start = tl.load(block_start + pid)
    param = tl.load(tensors + row).to(tl.pointer_type(tl.float32))
    grad = tl.load(tensors + row + 1).to(tl.pointer_type(tl.float32))
    state_sum = tl.load(tensors + row + 2).to(tl.pointer_type(tl.float32))
    count = tl.load(tensors + row + 3)
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < count
    g = tl.load(grad + offsets, mask=mask, other=0.0)
    p = tl.load(param + offsets, mask=mask, other=0.0)
    if HAS_WEIGHT_DECAY:
        g = g + weight_decay * p
    s = tl.load(state_sum + offsets, mask=mask, other=0.0) + g * g
    p = p - lr * tl.div_rn(g, tl.sqrt_rn(s) + eps)
    tl.store(state_sum + offsets, s, mask=mask)
    tl.store(param + offsets, p, mask=mask)

"""The ``@triton.jit`` kernel of the low-rank cross layers' backward (``low_rank_cross``): one layer's elementwise
work in one pass.

For one layer, with ``g`` the gradient of its output, ``x0`` the cross net's input and ``h2`` the up projection's
output (all ``[rows, cols]``, contiguous, one dtype): ``dh2 = g * x0`` (the up projection's output gradient),
``acc = acc + g * h2`` (``x0``'s gradient, accumulated over the layers; ``g * h2`` for the first one) and the
column sums of ``dh2`` over each block of ``BLOCK_M`` rows in fp32 (``partial``: their sum over blocks is the
bias gradient). Products and sums in fp32, rounded once to the dtype on store, as torch's ``mul`` and
``addcmul_``. One read of ``g``, ``x0``, ``h2`` (and ``acc``) and one write of ``dh2`` and ``acc``, where the
torch ops pass over them three times (``mul``, ``addcmul_``, ``sum``). Runs under Triton's interpreter
(``TRITON_INTERPRET=1``) on CPU tensors.

Example:
    >>> grid = (triton.cdiv(rows, BLOCK_M), triton.cdiv(cols, BLOCK_N))  # doctest: +SKIP
    >>> cross_layer_grads[grid](g, x0, h2, acc, dh2, partial, rows, cols, HAS_ACC=True,  # doctest: +SKIP
    ...                         BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
"""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK_M = 32  # rows per program (one partial column sum each)
BLOCK_N = 64  # columns per program (a 32 x 64 tile: 16 values a thread per tensor with 4 warps)


@triton.jit
def cross_layer_grads(g, x0, h2, acc, dh2, partial, rows, cols,
                      HAS_ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    offsets = r[:, None].to(tl.int64) * cols + c[None, :]
    grad = tl.load(g + offsets, mask=mask, other=0.0).to(tl.float32)
    d = (grad * tl.load(x0 + offsets, mask=mask, other=0.0).to(tl.float32)).to(dh2.dtype.element_ty)
    tl.store(dh2 + offsets, d, mask=mask)
    a = grad * tl.load(h2 + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_ACC:
        a = a + tl.load(acc + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(acc + offsets, a.to(acc.dtype.element_ty), mask=mask)
    tl.store(partial + pid_m * cols + c, tl.sum(d.to(tl.float32), axis=0), mask=c < cols)

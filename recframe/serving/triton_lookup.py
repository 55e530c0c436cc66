"""A Triton kernel for pooled lookups of quantized rows: one program per bag, dequantized and summed in fp32.

``InferenceEmbeddingBags`` uses it on CUDA tensors when Triton imports (eager scoring, ``recframe
predict device=cuda``); its plain-torch path (gather, dequantize, ``index_add_``) is the reference
and what ``torch.export`` traces (AOTInductor then generates its own fused GPU kernels from it).

The ids of a bag are contiguous (``offsets``, as a KeyedJaggedTensor keeps them); each id has a row
(of the group's concatenated table) and a weight (0 for ids that do not belong to the group, 1 or
``1 / bag size``). A program loops over its bag's ids in order, so the sum is the same on every run
(no atomics). Storage modes: 0 fp32 rows, 1 fp16 rows, 2 int8 rows with a float32 scale and bias per
row, 3 int4 rows (two a byte, low nibble first) with a float16 scale and bias (``quantize.QuantizedRows``).
It runs under Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors, which the tests use.

Example:
    >>> out = pooled_rows(table, rows, weights, offsets)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recframe.serving.quantize import QuantizedRows
from recframe.vocab import Quantize

MODES = {Quantize.none: 0, Quantize.fp16: 1, Quantize.int8: 2, Quantize.int4: 3}


@triton.jit
def _pooled_quantized(data_ptr, scale_bias_ptr, rows_ptr, weights_ptr, offsets_ptr, out_ptr, dim, row_bytes,
                      MODE: tl.constexpr, BLOCK_D: tl.constexpr):
    bag = tl.program_id(0)
    start = tl.load(offsets_ptr + bag)
    end = tl.load(offsets_ptr + bag + 1)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(start, end):
        row = tl.load(rows_ptr + i)
        w = tl.load(weights_ptr + i)
        if MODE == 3:
            packed = tl.load(data_ptr + row * row_bytes + cols // 2, mask=col_ok, other=0).to(tl.int32)
            q = (packed >> ((cols % 2) * 4)) & 15
        else:
            q = tl.load(data_ptr + row * row_bytes + cols, mask=col_ok, other=0)
        values = q.to(tl.float32)
        if MODE >= 2:
            scale = tl.load(scale_bias_ptr + row * 2).to(tl.float32)
            bias = tl.load(scale_bias_ptr + row * 2 + 1).to(tl.float32)
            values = values * scale + bias
        acc += values * w
    tl.store(out_ptr + bag * dim + cols, acc, mask=col_ok)


def pooled_rows(table: QuantizedRows, rows: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor
                ) -> torch.Tensor:
    """``[bags, dim]`` fp32: for each bag, the sum over its ids of ``weight * row`` (rows dequantized).

    Args:
        table: the rows, in their stored form.
        rows: int64 row of each id.
        weights: float32 weight of each id.
        offsets: int64 ``[bags + 1]`` bounds of the bags' ids.
    """
    bags = offsets.numel() - 1
    out = torch.empty(bags, table.dim, dtype=torch.float32, device=rows.device)
    if bags == 0:
        return out
    data = table.data.contiguous()
    scale_bias = table.scale_bias.contiguous() if table.scale_bias.numel() else data  # (unused below int8)
    _pooled_quantized[(bags,)](data, scale_bias, rows.contiguous(), weights.float().contiguous(),
                               offsets.contiguous(), out, table.dim, data.shape[1], MODE=MODES[table.mode],
                               BLOCK_D=triton.next_power_of_2(max(table.dim, 1)))
    return out

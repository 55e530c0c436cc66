"""Row-wise quantized embedding tables for inference: fp16, int8 and int4 rows with a scale and bias per row.

A table of ``rows x dim`` float32 values becomes, per row ``r``:

- ``fp16``: the row in half precision (2 bytes a value).
- ``int8``: ``q[r] = round((w[r] - min_r) / scale_r)`` in ``0..255`` with ``scale_r = (max_r - min_r) / 255``
  and ``bias_r = min_r``, kept as float32 (fbgemm's 8-bit rowwise layout: ``dim + 8`` bytes a row).
- ``int4``: the same with ``0..15``, two values a byte (the even column in the low nibble), scale and
  bias as float16 (fbgemm's 4-bit rowwise layout: ``ceil(dim / 2) + 4`` bytes a row).

A row is read back as ``q * scale + bias``: the error of a value is at most ``scale_r / 2`` (plus
the float16 rounding of scale and bias for int4). A constant row is stored exactly (scale 0).

Example:
    >>> import torch
    >>> w = torch.tensor([[0.0, 1.0, 0.5], [2.0, 2.0, 2.0]])
    >>> table = QuantizedRows.from_weight(w, "int8")
    >>> table.data.dtype, table.bytes_per_row, table.rows(torch.tensor([1, 0])).tolist()[0]
    (torch.uint8, 11, [2.0, 2.0, 2.0])
"""

from __future__ import annotations

import torch
from torch import nn

from recframe.vocab import Quantize

LEVELS = {Quantize.int8: 255, Quantize.int4: 15}


class QuantizedRows(nn.Module):
    """One table's rows in a quantized form; ``rows(ids)`` returns them as float32.

    Args:
        data: ``fp16``: ``[rows, dim]`` float16; ``int8``: ``[rows, dim]`` uint8; ``int4``: ``[rows, ceil(dim/2)]``
            uint8; ``none``: ``[rows, dim]`` float32.
        scale_bias: ``[rows, 2]`` (float32 for int8, float16 for int4); None for fp16 and none.
        mode: the quantization.
        dim: the row width.
    """

    def __init__(self, data: torch.Tensor, scale_bias: torch.Tensor | None, mode: Quantize, dim: int) -> None:
        super().__init__()
        self.mode = Quantize(mode)
        self.dim = dim
        self.register_buffer("data", data)
        self.register_buffer("scale_bias", scale_bias if scale_bias is not None else torch.empty(0))

    @staticmethod
    def from_weight(weight: torch.Tensor, mode: Quantize | str) -> QuantizedRows:
        """Quantize a float ``[rows, dim]`` table.

        Args:
            weight: the trained rows.
            mode: ``none``, ``fp16``, ``int8`` or ``int4``.
        """
        mode = Quantize(mode)
        weight = weight.detach().float()
        dim = weight.shape[1]
        if mode == Quantize.none:
            return QuantizedRows(weight.clone(), None, mode, dim)
        if mode == Quantize.fp16:
            return QuantizedRows(weight.half(), None, mode, dim)
        levels = LEVELS[mode]
        low = weight.amin(dim=1, keepdim=True) if dim else weight.new_zeros(weight.shape[0], 1)
        high = weight.amax(dim=1, keepdim=True) if dim else low
        scale_dtype = torch.float32 if mode == Quantize.int8 else torch.float16
        # scale and bias as stored (float16 for int4) so the rounding sees the values the reader uses
        scale = ((high - low) / levels).to(scale_dtype).float()
        bias = low.to(scale_dtype).float()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round((weight - bias) / safe).clamp_(0, levels).to(torch.uint8)
        if mode == Quantize.int4:
            if dim % 2:
                q = torch.cat([q, q.new_zeros(q.shape[0], 1)], dim=1)
            q = q[:, 0::2] | (q[:, 1::2] << 4)
        return QuantizedRows(q.contiguous(), torch.cat([scale, bias], dim=1).to(scale_dtype), mode, dim)

    @property
    def bytes_per_row(self) -> int:
        """Bytes of one row, with its scale and bias."""
        per_row_data = self.data.shape[1] * self.data.element_size()
        return per_row_data + (2 * self.scale_bias.element_size() if self.scale_bias.numel() else 0)

    @property
    def num_bytes(self) -> int:
        """Bytes of the whole table."""
        return self.data.shape[0] * self.bytes_per_row

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """``[len(ids), dim]`` float32 rows of ``ids`` (int64 row numbers in range)."""
        data = self.data[ids]
        if self.mode in (Quantize.none, Quantize.fp16):
            return data.float()
        if self.mode == Quantize.int4:
            data = torch.stack([data & 15, data >> 4], dim=2).flatten(1)[:, : self.dim]
        scale_bias = self.scale_bias[ids].float()
        return data.float() * scale_bias[:, :1] + scale_bias[:, 1:]

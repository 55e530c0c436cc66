"""``Linear``: ``nn.Linear`` whose fp32 CPU matmuls run on oneDNN, the dense towers' layer.

Why: torch's fp32 ``addmm`` on the CPU is MKL's sgemm, which on this project's AMD EPYC (Zen 4) machines runs
the DLRM top MLP's first layer (``[2048, 415] x [415, 512]``: the odd width of the 351 pair dots + 64 dense) at
~130 GFLOP/s; oneDNN's matmul (AVX-512) runs it at ~195 (BENCHMARKS.md, issue 22). ``Linear`` computes the
forward and the input's gradient with oneDNN (``torch.ops.mkldnn._linear_pointwise``, the kernel inductor uses
for CPU linears) and the weight's gradient with ``mm`` (oneDNN is no faster there). Everything else (a GPU,
another dtype, autocast, ``torch.compile`` tracing, a torch built without oneDNN) is ``nn.Linear``'s own
forward. Same parameters and state dict as ``nn.Linear``; results equal up to the order of the sums.

Example:
    >>> import torch
    >>> layer = Linear(415, 8)
    >>> x = torch.randn(4, 415)
    >>> torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``Linear`` runs ``x @ weight.T`` on oneDNN: fp32 CPU tensors, 2-D input, no autocast, not traced."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() == 2
            and torch.backends.mkldnn.is_available() and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` by oneDNN (``weight`` may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _mm(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ x if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """``nn.Linear`` with its fp32 CPU forward and input gradient on oneDNN (module docstring).

    Args: as ``nn.Linear``: ``in_features``, ``out_features``, ``bias``.

    Example:
        >>> Linear(13, 4)(torch.randn(2, 13)).shape
        torch.Size([2, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn_applies(x, self.weight):
            return _OneDnnLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

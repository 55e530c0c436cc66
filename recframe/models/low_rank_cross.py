"""The low-rank cross layers of DCNv2 as one autograd node with a hand-written backward.

``x_{l+1} = x_l + x0 * (U_l (V_l x_l) + b_l)`` for ``l = 0 .. L-1`` (``x_0 = x0``). Autograd's backward of
these ops, per layer on the ``[batch, d]`` stream: one product for ``x0``'s gradient, one for the up
projection's, an addition joining ``x_l``'s two gradients, and one more addition for each further use of
``x0`` (``L + 1`` uses); each reads and writes whole ``[batch, d]`` tensors (the cross net's elementwise work
is the largest memory-bound share of a DLRM-DCNv2 step on a GPU). This backward keeps one accumulator for
``x0``'s gradient, updated in place, and joins ``x_l``'s two gradients inside the down projection's
input-gradient GEMM (``addmm``: ``g + dh1 @ V``); on a GPU one Triton kernel (``cross_kernel``) makes the up
projection's gradient, the accumulation and the bias gradient's partial sums in one pass, so a layer's
elementwise work is one read of ``g``, ``x0``, ``h2`` and the accumulator and one write of two tensors besides its
four GEMMs (elsewhere, or once the kernel failed to compile or launch: torch's ``mul``, ``addcmul_`` and
``sum``, with a warning logged once).

The forward runs the same ops as the plain layers (``LowRankCrossNet``), in ``x0``'s dtype with the weights
cast to it (autocast's choice under autocast: the caller casts ``x0``), so outputs are the plain layers'.

Example:
    >>> import torch
    >>> x0 = torch.randn(4, 6, requires_grad=True)
    >>> down, up, bias = [torch.randn(2, 6)], [torch.randn(6, 2)], [torch.zeros(6)]
    >>> out = low_rank_cross(x0, down, up, bias)
    >>> out.sum().backward(); x0.grad.shape
    torch.Size([4, 6])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own alias)

# Under Triton's interpreter (tests on a machine without a GPU) the backward's kernel runs on CPU tensors too.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
log = logging.getLogger(__name__)
# Why the Triton kernel failed (compiling or launching), once it did: from then on torch's ops run (same values).
KERNEL_FAILURE: list[str] = []


def _layers(x0: torch.Tensor, down: Sequence[torch.Tensor], up: Sequence[torch.Tensor],
            bias: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor],
                                                   list[torch.Tensor]]:
    """The layers' output and, per layer, the input ``x_l``, ``h1 = V x_l`` and ``h2 = U h1 + b`` (the backward's
    saved tensors). ``down``/``up``/``bias`` are already in ``x0``'s dtype."""
    x, inputs, h1s, h2s = x0, [], [], []
    for v, u, b in zip(down, up, bias, strict=True):
        h1 = F.linear(x, v)
        h2 = F.linear(h1, u, b)
        inputs.append(x)
        h1s.append(h1)
        h2s.append(h2)
        x = torch.addcmul(x, x0, h2)
    return x, inputs, h1s, h2s


def kernel_usable(t: torch.Tensor) -> bool:
    """Whether ``layer_grads`` runs the Triton kernel (``cross_kernel``) on ``t``'s device: CUDA with triton, or a
    CPU tensor under Triton's interpreter (``TRITON_INTERPRET=1``, the tests), unless it failed before."""
    if KERNEL_FAILURE or not (t.is_cuda or (t.device.type == "cpu" and INTERPRETED)):
        return False
    try:
        import recframe.models.cross_kernel  # noqa: F401 (triton imports)
    except ImportError:
        return False
    return True


def layer_grads(g: torch.Tensor, x0: torch.Tensor, h2: torch.Tensor,
                acc: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One cross layer's elementwise backward: ``dh2 = g * x0``, ``x0``'s gradient accumulator ``acc + g * h2``
    (in place; ``g * h2`` for ``acc=None``) and the bias gradient (``dh2``'s column sums, fp32).

    Args:
        g: the layer output's gradient, ``[batch, d]``, contiguous.
        x0: the cross net's input (as ``g``).
        h2: the layer's up projection output ``U V x_l + b`` (as ``g``).
        acc: ``x0``'s gradient so far, or None at the last layer (the first one the backward meets).

    Returns:
        ``(dh2, acc, bias_grad)``.

    Example:
        >>> ones = torch.ones(2, 3)
        >>> [t.tolist() for t in layer_grads(ones, 2 * ones, 3 * ones, None)][2]
        [4.0, 4.0, 4.0]
    """
    if kernel_usable(g) and all(t.is_contiguous() for t in (g, x0, h2)):
        fused = _kernel_layer_grads(g, x0, h2, acc)
        if fused is not None:
            return fused
    dh2 = g * x0
    acc = g * h2 if acc is None else acc.addcmul_(g, h2)
    return dh2, acc, dh2.sum(0, dtype=torch.float32)


def _kernel_layer_grads(g: torch.Tensor, x0: torch.Tensor, h2: torch.Tensor,
                        acc: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``layer_grads`` by the Triton kernel; None if it fails to compile or launch (logged once, recorded in
    ``KERNEL_FAILURE``: the caller runs torch's ops, and so does every later call)."""
    from recframe.models import cross_kernel

    rows, cols = g.shape
    grid = (-(-rows // cross_kernel.BLOCK_M), -(-cols // cross_kernel.BLOCK_N))
    dh2 = torch.empty_like(g)
    out = torch.empty_like(g) if acc is None else acc
    partial = torch.empty(grid[0], cols, dtype=torch.float32, device=g.device)
    try:
        cross_kernel.cross_layer_grads[grid](g, x0, h2, out, dh2, partial, rows, cols, HAS_ACC=acc is not None,
                                             BLOCK_M=cross_kernel.BLOCK_M, BLOCK_N=cross_kernel.BLOCK_N)
    except Exception as error:  # noqa: BLE001 (triton's compile and launch errors have no common base)
        KERNEL_FAILURE.append(f"{type(error).__name__}: {error}")
        log.warning("the cross layers' backward kernel failed (%s); torch's ops run it from now on",
                    KERNEL_FAILURE[0])
        return None
    return dh2, out, partial.sum(0)


class _LowRankCross(torch.autograd.Function):
    """``low_rank_cross``'s autograd node: inputs ``x0, *down, *up, *bias`` (``L`` of each)."""

    @staticmethod
    def forward(ctx, x0: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 (autograd's ctx)
        n = len(weights) // 3
        cast = [w.to(x0.dtype) for w in weights]
        with torch.autocast(x0.device.type, enabled=False):
            out, inputs, h1s, h2s = _layers(x0, cast[:n], cast[n:2 * n], cast[2 * n:])
        ctx.save_for_backward(x0, *cast[:2 * n], *inputs, *h1s, *h2s)
        ctx.num_layers = n
        ctx.weight_dtypes = [w.dtype for w in weights]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001 (autograd's ctx)
        n = ctx.num_layers
        x0, *saved = ctx.saved_tensors
        down, up, inputs, h1s, h2s = (saved[i * n:(i + 1) * n] for i in range(5))
        g = grad.to(x0.dtype).contiguous()
        grad_down: list[torch.Tensor | None] = [None] * n
        grad_up: list[torch.Tensor | None] = [None] * n
        grad_bias: list[torch.Tensor | None] = [None] * n
        grad_x0: torch.Tensor | None = None
        with torch.autocast(x0.device.type, enabled=False):
            for i in reversed(range(n)):
                dh2, grad_x0, grad_bias[i] = layer_grads(g, x0, h2s[i], grad_x0)
                dh1 = dh2 @ up[i]
                grad_up[i] = dh2.t() @ h1s[i]
                grad_down[i] = dh1.t() @ inputs[i]
                g = torch.addmm(g, dh1, down[i])  # x_l's gradient: through the identity and through V
            grad_x0 = g if grad_x0 is None else grad_x0.add_(g)
        grads = [*grad_down, *grad_up, *grad_bias]
        dtypes = ctx.weight_dtypes
        out = [grad_x0 if ctx.needs_input_grad[0] else None]
        out += [w.to(dtypes[i]) if ctx.needs_input_grad[i + 1] else None for i, w in enumerate(grads)]
        return tuple(out)


def low_rank_cross(x0: torch.Tensor, down: Sequence[torch.Tensor], up: Sequence[torch.Tensor],
                   bias: Sequence[torch.Tensor]) -> torch.Tensor:
    """``L`` low-rank cross layers over ``x0`` (``[batch, d]``), with the fused backward where gradients flow.

    Args:
        x0: the cross net's input, in the dtype the layers run in (autocast's dtype under autocast).
        down: ``L`` weights ``V_l`` of shape ``[r, d]``.
        up: ``L`` weights ``U_l`` of shape ``[d, r]``.
        bias: ``L`` biases ``b_l`` of shape ``[d]``.

    Returns:
        ``x_L``, ``[batch, d]`` in ``x0``'s dtype.

    Example:
        >>> import torch
        >>> low_rank_cross(torch.ones(1, 2), [torch.ones(1, 2)], [torch.ones(2, 1)], [torch.zeros(2)])
        tensor([[3., 3.]])
    """
    if not down:
        return x0
    tensors = (x0, *down, *up, *bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _LowRankCross.apply(*tensors)
    with torch.autocast(x0.device.type, enabled=False):
        return _layers(x0, [w.to(x0.dtype) for w in down], [w.to(x0.dtype) for w in up],
                       [b.to(x0.dtype) for b in bias])[0]

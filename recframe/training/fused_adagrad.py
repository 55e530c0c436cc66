"""Dense Adagrad on a GPU in one kernel launch: ``FusedAdagrad``.

torch 2.11's ``Adagrad(fused=True)`` is CPU-only, and its multi-tensor (foreach) path on a GPU passes over the
parameters, gradients and state sums four times (``addcmul``, ``sqrt``, ``add``, ``addcdiv``), a few launches a
step. ``FusedAdagrad`` is ``torch.optim.Adagrad`` (same hyperparameters, same state: ``step`` and ``sum`` per
parameter, so checkpoints move between the two) whose update of every fp32 parameter on the device is one Triton
launch that reads each element once (``recframe.training.adagrad_kernel``). The launch's table of tensor addresses
is made once and again only when an address changes (a CUDA graph's gradients keep theirs), copied to the device
from pinned memory without waiting. Parameters it cannot take (another dtype or device, sparse or strided
gradients) are updated by torch's multi-tensor Adagrad in the same step, and all of them are if the kernel
fails to compile or launch (logged once).

Example:
    >>> model = torch.nn.Linear(4, 2, device="cuda")  # doctest: +SKIP
    >>> optimizer = FusedAdagrad(model.parameters(), lr=0.01, eps=1e-8, weight_decay=0.0)  # doctest: +SKIP
    >>> model(torch.randn(8, 4, device="cuda")).sum().backward(); optimizer.step()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.optim.adagrad import adagrad as torch_adagrad

log = logging.getLogger(__name__)
# Under Triton's interpreter (tests on a machine without a GPU) the kernel runs on CPU tensors too.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass
class _Launch:
    """One launch's inputs for a list of tensors: their addresses (``key``) and the kernel's tables."""

    key: tuple[int, ...]
    tensors: torch.Tensor  # int64 [n, 4]: parameter, gradient and state-sum addresses, element count
    block_tensor: torch.Tensor  # int32 [blocks]: the tensor of each program
    block_start: torch.Tensor  # int64 [blocks]: its first element


class FusedAdagrad(torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with one fused launch for the device's fp32 parameters (module docstring).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        eps: denominator epsilon.
        weight_decay: L2 penalty added to the gradient (as torch's Adagrad).

    Raises:
        ImportError: triton does not import (the caller falls back to torch's Adagrad).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict], lr: float, eps: float,
                 weight_decay: float) -> None:
        from recframe.training import adagrad_kernel

        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay, foreach=True)
        self._kernel = adagrad_kernel
        self._launches: dict[int, _Launch] = {}  # by param group
        self._unusable: str | None = None  # why the kernel failed, once it did

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            device = params[0].device if params else None
            fused = [p for p in params if self._unusable is None and _fusable(p, self.state[p]["sum"], device)]
            rest = [p for p in params if not any(p is f for f in fused)]
            if fused and not self._update(index, group, fused):
                rest = params  # the kernel failed (logged once): torch's Adagrad from here on
            elif fused:
                torch._foreach_add_([self.state[p]["step"] for p in fused], 1)
            if rest:
                torch_adagrad(rest, [p.grad for p in rest], [self.state[p]["sum"] for p in rest],
                              [self.state[p]["step"] for p in rest], foreach=True, lr=group["lr"],
                              weight_decay=group["weight_decay"], lr_decay=group["lr_decay"], eps=group["eps"],
                              maximize=group["maximize"])
        return loss

    def _update(self, index: int, group: dict, params: list[torch.Tensor]) -> bool:
        """Launch the fused update of ``params``; False (and torch's Adagrad from then on) if the kernel fails to
        compile or launch, which is logged once with the reason."""
        if group["lr_decay"] != 0 or group["maximize"]:
            raise ValueError("FusedAdagrad takes neither lr_decay nor maximize (torch.optim.Adagrad does)")
        launch = self._launch(index, params)
        weight_decay = float(group["weight_decay"])
        try:
            self._kernel.adagrad_update[(launch.block_tensor.numel(),)](
                launch.tensors, launch.block_tensor, launch.block_start, float(group["lr"]), float(group["eps"]),
                weight_decay, HAS_WEIGHT_DECAY=weight_decay != 0.0, BLOCK=self._kernel.BLOCK)
        except Exception as error:  # noqa: BLE001 (triton's compile and launch errors have no common base)
            self._unusable = f"{type(error).__name__}: {error}"
            log.warning("FusedAdagrad's kernel failed (%s); the dense Adagrad runs torch's foreach kernels",
                        self._unusable)
            return False
        return True

    def _launch(self, index: int, params: list[torch.Tensor]) -> _Launch:
        """The kernel's tables for these tensors, made again only when an address changed."""
        trios = [(p, p.grad, self.state[p]["sum"]) for p in params]
        key = tuple(t.data_ptr() for trio in trios for t in trio)
        cached = self._launches.get(index)
        if cached is not None and cached.key == key:
            return cached
        block = self._kernel.BLOCK
        counts = [p.numel() for p in params]
        blocks = torch.tensor([math.ceil(n / block) for n in counts])
        tensors = torch.tensor([[p.data_ptr(), g.data_ptr(), s.data_ptr(), n]
                                for (p, g, s), n in zip(trios, counts, strict=True)], dtype=torch.int64)
        block_tensor = torch.repeat_interleave(torch.arange(len(params), dtype=torch.int32), blocks)
        first = torch.repeat_interleave(torch.cumsum(blocks, 0) - blocks, blocks)
        block_start = (torch.arange(block_tensor.numel()) - first) * block
        device = params[0].device
        launch = _Launch(key, *(_to(t, device) for t in (tensors, block_tensor, block_start)))
        self._launches[index] = launch
        return launch


def _fusable(param: torch.Tensor, state_sum: torch.Tensor, device: torch.device) -> bool:
    """Whether the fused launch can update ``param``: fp32, dense and contiguous with its gradient and state, on
    ``device`` (a GPU, or any device under Triton's interpreter)."""
    grad = param.grad
    assert grad is not None
    tensors = (param, grad, state_sum)
    return ((device.type == "cuda" or INTERPRETED) and not grad.is_sparse
            and all(t.dtype == torch.float32 and t.device == device and t.is_contiguous() for t in tensors))


def _to(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host table on ``device``: from pinned memory without waiting on a GPU (the copy runs in stream order)."""
    if device.type != "cuda":
        return table
    return table.pin_memory().to(device, non_blocking=True)

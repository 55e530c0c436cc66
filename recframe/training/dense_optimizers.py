"""The dense towers' optimizers (``optim.dense.name``), each registered once with how torch builds it.

With ``optim.dense.fused`` an optimizer runs a fused kernel (one pass over all parameters): on a
GPU torch's for Adam, AdamW and SGD and recframe's ``FusedAdagrad`` for Adagrad (torch's is
CPU-only), on the CPU torch's; without it, torch's multi-tensor (foreach) kernels on a GPU and its
default on the CPU.
Adding an optimizer is one ``DENSE_OPTIMIZERS.add`` here.

Example:
    >>> from torch import nn
    >>> from recframe.config.schema import OptimConfig
    >>> type(build_dense_optimizer(list(nn.Linear(2, 2).parameters()), OptimConfig())).__name__
    'Adagrad'
    >>> DENSE_OPTIMIZERS.names()
    ['adagrad', 'adam', 'adamw', 'sgd']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recframe.config.schema import DenseOptimConfig, OptimConfig
from recframe.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseOptimizer:
    """How to build one torch optimizer.

    Args:
        make: ``(params, settings, kernel options) -> optimizer``; kernel options are ``fused`` or ``foreach``.
        fused_on_cuda: it has a fused CUDA kernel (torch's; Adagrad's is recframe's ``FusedAdagrad``).
    """

    make: Callable[[list[nn.Parameter], DenseOptimConfig, dict[str, Any]], torch.optim.Optimizer]
    fused_on_cuda: bool


def _adagrad(params: list[nn.Parameter], c: DenseOptimConfig, kernel: dict[str, Any]) -> torch.optim.Optimizer:
    """torch's Adagrad; on a GPU with ``fused``, recframe's ``FusedAdagrad`` (torch's fused Adagrad is CPU-only),
    or torch's foreach kernels where triton does not import."""
    if kernel.get("fused") and params and params[0].is_cuda:
        try:
            from recframe.training.fused_adagrad import FusedAdagrad

            return FusedAdagrad(params, lr=c.lr, eps=c.eps, weight_decay=c.weight_decay)
        except ImportError as error:
            log.warning("optim.dense.fused: triton does not import (%s); dense Adagrad runs torch's foreach "
                        "kernels", error)
            kernel = {"foreach": True}
    return torch.optim.Adagrad(params, lr=c.lr, weight_decay=c.weight_decay, eps=c.eps, **kernel)


DENSE_OPTIMIZERS: Registry[DenseOptimizer] = Registry("dense optimizer")
DENSE_OPTIMIZERS.add("adagrad", DenseOptimizer(_adagrad, fused_on_cuda=True))
DENSE_OPTIMIZERS.add("adam", DenseOptimizer(
    lambda params, c, kernel: torch.optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                                               weight_decay=c.weight_decay, **kernel),
    fused_on_cuda=True))
DENSE_OPTIMIZERS.add("adamw", DenseOptimizer(
    lambda params, c, kernel: torch.optim.AdamW(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                                                weight_decay=c.weight_decay, **kernel),
    fused_on_cuda=True))
DENSE_OPTIMIZERS.add("sgd", DenseOptimizer(
    lambda params, c, kernel: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                              **kernel),
    fused_on_cuda=True))


def build_dense_optimizer(params: list[nn.Parameter], optim: OptimConfig,
                          device: torch.device | None = None) -> torch.optim.Optimizer:
    """The torch optimizer named by ``optim.dense.name`` (fused or foreach kernels: module docstring).

    Args:
        params: dense parameters.
        optim: the optimizer settings.
        device: where the parameters live (None: the CPU).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    cfg = optim.dense
    entry = DENSE_OPTIMIZERS[cfg.name]
    if device is not None and device.type == "cuda":
        kernel = {"fused": True} if cfg.fused and entry.fused_on_cuda else {"foreach": True}
    else:  # torch has a fused CPU kernel for each of them (Adagrad on dlrm's towers: 0.65 against 1.3 ms a step)
        kernel = {"fused": True} if cfg.fused else {}
    return entry.make(params, cfg, kernel)

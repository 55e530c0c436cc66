"""Strategies that leave the model where it trained when a fit, validate or test ends.

Lightning's ``Strategy.teardown`` moves the LightningModule and every optimizer state to the CPU at the end of
each ``fit``/``validate``/``test``, to free the GPU for whatever a notebook does next. For recframe that is a
full copy of the embedding tables into host memory (the 104 GB of MLPerf's 204M rows need as much free host RAM;
each such `recframe bench` run on an H200 took 115-128 s of wall time for ~10 s of training, this copy the one
step that grows with the tables; not yet timed without it), and ``recframe train``'s final validation then copied
them all back. ``KeepOnDevice`` runs the strategy's teardown without those two moves; everything else it releases
(precision plugin, accelerator, checkpoint IO, DDP's wrapper) is released as before.

Example:
    >>> strategy = OneDeviceStrategy(device=one_device("cpu"))
    >>> trainer = pl.Trainer(accelerator="cpu", devices=1, strategy=strategy)  # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from pytorch_lightning.strategies import SingleDeviceStrategy

from recframe.training.devices import GPU_ACCELERATORS

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytorch_lightning as pl


class KeepOnDevice:
    """A mixin (before a Lightning strategy in the bases) whose ``teardown`` does not move the model or the
    optimizer states to the CPU (module docstring)."""

    def teardown(self) -> None:
        optimizers = self.optimizers  # type: ignore[attr-defined]
        self.optimizers = []  # Strategy.teardown moves the states of these to the CPU
        try:
            with _cpu_is_a_no_op(self.lightning_module):  # type: ignore[attr-defined]
                super().teardown()  # type: ignore[misc]
        finally:
            self.optimizers = optimizers


class OneDeviceStrategy(KeepOnDevice, SingleDeviceStrategy):
    """Lightning's one-device strategy, leaving the model on its device at teardown (module docstring).

    Args:
        device: the training device (:func:`one_device`).
    """

    strategy_name = "recframe_one_device"


def one_device(accelerator: str) -> torch.device:
    """The device a one-process run of ``trainer.accelerator`` trains on: ``cuda:0`` (the first visible GPU) for
    ``gpu`` or ``cuda``, and for ``auto`` where a GPU is visible; the CPU otherwise.

    Example:
        >>> one_device("cpu")
        device(type='cpu')
    """
    if accelerator in GPU_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


@contextmanager
def _cpu_is_a_no_op(module: pl.LightningModule | None) -> Iterator[None]:
    """Within the block, ``module.cpu()`` returns the module unmoved (an attribute of this instance only)."""
    if module is None:
        yield
        return
    module.cpu = lambda: module  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.cpu

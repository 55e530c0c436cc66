"""Training scalars beyond the loss: ``train/auc`` over each logging window and the step's time by phase.

- ``WindowAUC``: the AUC of the training predictions since the last logging step, from two
  histograms (positives and negatives per bin of the predicted probability) that each step adds to
  on the device (one ``index_add_`` each, no host sync). At a logging step the AUC comes from the
  histograms (ties within a bin count half: within ~1/bins of the exact AUC) and they restart.
- ``TrainAUC``: the callback that feeds it with the model's training outputs (a forward hook: the
  step's logits) and the batch's labels, and writes ``train/auc`` (``train/auc_<task>`` with several
  tasks) through ``StepScalars``: read once the value reached the host, never waited for in a step.
- ``StepBreakdown``: ``perf/data_wait_ms`` (from the end of one step to the start of the next: the
  loader and the copy to the device), ``perf/forward_backward_ms`` (forward, loss, backward with the
  fused sparse update) and ``perf/optimizer_ms`` (the dense optimizer step and the step's hooks),
  means over each logging window of host wall time; on a GPU the two device phases of each logging
  step are CUDA events, read at the next logging step when they have completed (no sync).

Example:
    >>> auc = WindowAUC(tasks=1, bins=1024)
    >>> auc.update(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    >>> auc.compute()
    tensor([0.5000], dtype=torch.float64)
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch

from recframe.sparse import Batch
from recframe.training.module import is_logging_step, log_host_scalars
from recframe.training.step_scalars import StepScalars


class WindowAUC:
    """Binned AUC of a window of steps, accumulated on the device (module docstring).

    Args:
        tasks: label columns (one AUC each).
        bins: histogram bins of the predicted probability.
    """

    def __init__(self, tasks: int, bins: int = 1024) -> None:
        self.tasks, self.bins = tasks, bins
        self._pos: torch.Tensor | None = None
        self._neg: torch.Tensor | None = None
        self._task_start: torch.Tensor | None = None  # each task's first bin (several tasks), on the histograms' device

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``logits`` and ``labels`` of ``[batch]`` or ``[batch, tasks]``.

        Runs every training step: few kernels (host time), the task offsets made once.
        """
        p = torch.sigmoid(logits.detach().float()).reshape(-1, self.tasks)
        y = labels.detach().to(torch.float64).reshape(-1)
        if self._pos is None or self._pos.device != p.device:
            self._pos = torch.zeros(self.tasks * self.bins, dtype=torch.float64, device=p.device)
            self._neg = torch.zeros_like(self._pos)
            self._task_start = torch.arange(self.tasks, device=p.device) * self.bins if self.tasks > 1 else None
        assert self._neg is not None
        index = (p * self.bins).long().clamp_(0, self.bins - 1)
        if self._task_start is not None:
            index.add_(self._task_start)
        index = index.view(-1)
        self._pos.index_add_(0, index, y)
        self._neg.index_add_(0, index, 1.0 - y)

    @torch.no_grad()
    def compute(self) -> torch.Tensor | None:
        """Each task's AUC of the window (a device tensor; nan without positives or negatives); restarts it."""
        if self._pos is None or self._neg is None:
            return None
        pos, neg = self._pos.view(self.tasks, self.bins), self._neg.view(self.tasks, self.bins)
        below = torch.cumsum(neg, dim=1) - neg
        auc = (pos * (below + 0.5 * neg)).sum(dim=1) / (pos.sum(dim=1) * neg.sum(dim=1))
        self._pos.zero_()
        self._neg.zero_()
        return auc


class TrainAUC(pl.Callback):
    """``train/auc`` of each logging window (module docstring); for models with one logit per task.

    Args:
        task_names: the tasks in label-column order (one task: ``train/auc``; several: ``train/auc_<task>``).
        bins: histogram bins.
    """

    def __init__(self, task_names: list[str], bins: int = 1024) -> None:
        self.names = ["train/auc"] if len(task_names) <= 1 else [f"train/auc_{t}" for t in task_names]
        self.auc = WindowAUC(max(1, len(task_names)), bins)
        self.scalars = StepScalars()
        self._logits: torch.Tensor | None = None
        self._hook: Any = None
        self._step = 0  # the step being trained (the step train/loss is logged at)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = getattr(pl_module, "model", None) or pl_module

        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            if torch.is_grad_enabled() and isinstance(output, torch.Tensor):  # training (validation: no_grad)
                # detached: holding the autograd graph into the next step breaks a CUDA graph's capture (its
                # AccumulateGrad nodes stay on the eager stream); a graph's static output stays the live one
                self._logits = output.detach()
        self._hook = model.register_forward_hook(keep)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Batch,
                             batch_idx: int) -> None:
        self._step = trainer.global_step

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Batch, batch_idx: int) -> None:
        if self._logits is not None and self._logits.numel() == batch.labels.numel():
            self.auc.update(self._logits, batch.labels)
        if is_logging_step(trainer):
            auc = self.auc.compute()
            if auc is not None:
                self.scalars.add(dict(zip(self.names, auc, strict=True)))
                self.scalars.close(self._step)
        self._write(trainer, wait=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, wait=True)

    def _write(self, trainer: pl.Trainer, wait: bool) -> None:
        for step, values in self.scalars.ready(wait=wait):
            finite = {k: v for k, v in values.items() if math.isfinite(v)}
            if trainer.logger is not None and finite:
                trainer.logger.log_metrics(finite, step=step)


class StepBreakdown(pl.Callback):
    """``perf/data_wait_ms``, ``perf/forward_backward_ms``, ``perf/optimizer_ms`` (module docstring)."""

    NAMES = ("perf/data_wait_ms", "perf/forward_backward_ms", "perf/optimizer_ms")

    def __init__(self) -> None:
        self._last_end: float | None = None
        self._marks: list[float] = []
        self._sums = [0.0, 0.0, 0.0]
        self._steps = 0
        self._events: list[torch.cuda.Event] = []  # a logging step's start, before-optimizer and end
        self._pending: list[torch.cuda.Event] = []

    def _cuda_mark(self, pl_module: pl.LightningModule, first: bool) -> None:
        if pl_module.device.type != "cuda" or (first and not is_logging_step(pl_module.trainer)):
            return
        if first:
            self._events = []
        elif not self._events:
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._events.append(event)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Batch,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        self._marks = [self._last_end if self._last_end is not None else now, now]
        self._cuda_mark(pl_module, first=True)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self._marks.append(time.perf_counter())
        self._cuda_mark(pl_module, first=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Batch, batch_idx: int) -> None:
        self._last_end = time.perf_counter()
        if len(self._marks) != 3:  # no optimizer step in this batch (accumulation): not counted
            return
        self._cuda_mark(pl_module, first=False)
        marks = [*self._marks, self._last_end]
        for i in range(3):
            self._sums[i] += 1000.0 * (marks[i + 1] - marks[i])
        self._steps += 1
        if not is_logging_step(trainer):
            return
        log_host_scalars(pl_module, {name: total / self._steps for name, total in zip(self.NAMES, self._sums,
                                                                                          strict=True)})
        self._sums, self._steps = [0.0, 0.0, 0.0], 0
        if len(self._pending) == 3 and self._pending[-1].query():  # the previous logging step's, on the device
            start, middle, end = self._pending
            log_host_scalars(pl_module, {"perf/device_forward_backward_ms": start.elapsed_time(middle),
                                         "perf/device_optimizer_ms": middle.elapsed_time(end)})
        self._pending, self._events = self._events, []

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = None  # validation time is no data wait

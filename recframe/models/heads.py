"""Multi-task heads: named tasks with loss weights, the output layer, and the weighted loss.

A model with tasks ``[Task("click"), Task("purchase", weight=2.0)]`` outputs one logit per task;
its labels are ``[batch, 2]`` in the same order. With one task the logits and labels are ``[batch]``.

Example:
    >>> import torch
    >>> head = MultiTaskHead(in_features=16, tasks=[Task("click"), Task("purchase", weight=2.0)])
    >>> logits = head(torch.randn(4, 16))
    >>> logits.shape
    torch.Size([4, 2])
    >>> losses = head.loss(logits, torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    >>> sorted(losses.per_task)
    ['click', 'purchase']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Task:
    """A binary prediction task.

    Args:
        name: the task's name (used in logs: ``train/loss_<name>``).
        weight: its weight in the total loss.
    """

    name: str
    weight: float = 1.0


DEFAULT_TASKS: tuple[Task, ...] = (Task("label"),)


@dataclass
class TaskLosses:
    """The result of a multi-task loss.

    Args:
        total: ``sum(task.weight * per_task[task.name])``, the scalar to backpropagate.
        per_task: each task's unweighted mean binary cross-entropy.
    """

    total: torch.Tensor
    per_task: dict[str, torch.Tensor]


def check_tasks(tasks: Sequence[Task]) -> tuple[Task, ...]:
    """Validate a task list: at least one, unique names, finite non-negative weights."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("a model needs at least one task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    for t in tasks:
        if not (t.weight >= 0.0 and t.weight != float("inf")):
            raise ValueError(f"task {t.name!r}: weight must be finite and >= 0, got {t.weight}")
    return tasks


def multi_task_loss(logits: torch.Tensor, labels: torch.Tensor, tasks: Sequence[Task],
                    weights: torch.Tensor | None = None) -> TaskLosses:
    """Weighted sum of per-task binary cross-entropies (with logits).

    Args:
        logits: ``[batch]`` for one task or ``[batch, len(tasks)]``.
        labels: the same shape as ``logits`` (``[batch, 1]`` is also accepted for one task); values in [0, 1].
        tasks: the tasks, in column order.
        weights: the tasks' weights as a tensor on the logits' device (None: made from ``tasks``, which
            on a GPU is a blocking host-to-device copy: a training step passes them, kept on the device).

    Returns:
        The total and the per-task losses.

    Example:
        >>> out = multi_task_loss(torch.zeros(3), torch.tensor([0.0, 1.0, 1.0]), [Task("click")])
        >>> round(float(out.total), 4)
        0.6931
    """
    num_tasks = len(tasks)
    logits2 = logits.reshape(logits.shape[0], -1)
    labels2 = labels.reshape(labels.shape[0], -1)
    if logits2.shape[1] != num_tasks or labels2.shape != logits2.shape:
        raise ValueError(
            f"multi_task_loss: {num_tasks} tasks {[t.name for t in tasks]} need logits and labels of shape "
            f"[batch, {num_tasks}] (or [batch] for one task); got logits {tuple(logits.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    per_column = F.binary_cross_entropy_with_logits(logits2, labels2.to(logits2.dtype), reduction="none").mean(0)
    per_task = {t.name: per_column[i] for i, t in enumerate(tasks)}
    if weights is None:
        weights = task_weights(tasks, per_column.device)
    return TaskLosses(total=(per_column * weights.to(per_column.dtype)).sum(), per_task=per_task)


def task_weights(tasks: Sequence[Task], device: torch.device | None = None) -> torch.Tensor:
    """The tasks' loss weights, a float32 ``[len(tasks)]`` tensor."""
    return torch.tensor([t.weight for t in tasks], dtype=torch.float32, device=device)


class MultiTaskHead(nn.Module):
    """The output layer: one logit per task from a shared representation, plus the task loss.

    Args:
        in_features: width of the representation (the top MLP's output).
        tasks: the tasks, in the column order of the labels.

    Example:
        >>> head = MultiTaskHead(in_features=8)
        >>> head(torch.randn(2, 8)).shape  # one task: [batch]
        torch.Size([2])
    """

    def __init__(self, in_features: int, tasks: Sequence[Task] = DEFAULT_TASKS) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks)
        self.in_features = in_features
        self.linear = nn.Linear(in_features, len(self.tasks))
        # moved with the module, never saved: the loss reads no host data in a step
        self.register_buffer("task_weights", task_weights(self.tasks), persistent=False)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, in_features]`` to logits: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        return shape_logits(self.linear(x), self.num_tasks)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """The weighted multi-task loss of ``logits`` against ``labels`` (see ``multi_task_loss``)."""
        return multi_task_loss(logits, labels, self.tasks, self.task_weights)


def shape_logits(logits: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """``[batch, num_tasks]`` logits to the model output shape: ``[batch]`` when there is one task."""
    return logits.squeeze(1) if num_tasks == 1 else logits

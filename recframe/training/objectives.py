"""How a model is judged: the validation metric that fits its kind.

Every model computes its own training loss (``model.loss(model(batch), batch.labels)`` returns
the total and the per-task parts). What differs between kinds is validation:
``CTRObjective`` (DLRM, DLRM-DCN, DeepFM, Wide&Deep: one logit per task) computes AUC, NE,
logloss, calibration and CTR exactly over the whole validation set; ``RetrievalObjective``
(two-tower: in-batch ``[B, B]`` scores, positives on the diagonal) computes recall@k of each
user's positive item among the batch's items.

Example:
    >>> from recframe.models.heads import Task
    >>> type(CTRObjective([Task("click")]).make_metrics()).__name__
    'CTRMetrics'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torchmetrics import Metric

from recframe.models.heads import Task
from recframe.models.protocol import RecModel
from recframe.sparse import Batch
from recframe.training.metrics import CTRMetrics, RecallAtK


def training_loss(model: RecModel, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar to backpropagate, and the per-task parts to log (empty with a single task)."""
    losses = model.loss(model(batch).float(), batch.labels)
    return losses.total, (losses.per_task if len(losses.per_task) > 1 else {})


class Objective(Protocol):
    """The validation metric of a kind of model."""

    def make_metrics(self) -> Metric:
        """A fresh validation metric (a torchmetrics Metric: synced across ranks)."""
        ...

    def update_metrics(self, model: RecModel, batch: Batch, metrics: Metric) -> None:
        """Feed one validation batch to the metric."""
        ...


class CTRObjective:
    """Click-through-rate style tasks: exact AUC, NE, logloss, calibration, CTR per task.

    Args:
        tasks: the tasks in label-column order.
    """

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)

    def make_metrics(self) -> Metric:
        return CTRMetrics(task_names=[t.name for t in self.tasks] if len(self.tasks) > 1 else None)

    def update_metrics(self, model: RecModel, batch: Batch, metrics: Metric) -> None:
        metrics.update(model(batch).float(), batch.labels)


class RetrievalObjective:
    """Retrieval: recall@k of each user's positive among the batch's items.

    Args:
        ks: the k of recall@k.
    """

    def __init__(self, ks: Sequence[int]) -> None:
        self.ks = tuple(ks)

    def make_metrics(self) -> Metric:
        return RecallAtK(ks=self.ks)

    def update_metrics(self, model: RecModel, batch: Batch, metrics: Metric) -> None:
        scores = model(batch).float()
        metrics.update(scores, torch.arange(scores.shape[0], device=scores.device))

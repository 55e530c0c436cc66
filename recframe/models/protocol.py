"""RecModel: what training relies on from a model of the zoo (or a user's own).

A model maps a ``Batch`` to logits (or scores) and computes its own training loss from them;
the training layer calls nothing else (``recframe.training.objectives``). Embedding collections
are attributes the model calls (``recframe.embedding.protocol.EmbeddingModule``).

Example:
    >>> import torch
    >>> from recframe.models.heads import TaskLosses
    >>> class Constant(torch.nn.Module):
    ...     def forward(self, batch): return torch.zeros(batch.batch_size)
    ...     def loss(self, logits, labels): return TaskLosses(total=logits.sum(), per_task={})
    >>> isinstance(Constant(), RecModel)
    True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from recframe.models.heads import TaskLosses
from recframe.sparse import Batch


@runtime_checkable
class RecModel(Protocol):
    """A recommendation model: ``model(batch)`` -> logits, ``model.loss(logits, labels)`` -> TaskLosses."""

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Logits ``[batch]`` / ``[batch, tasks]`` (CTR models) or scores ``[batch, batch]`` (retrieval)."""
        ...

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """The total training loss and its per-task parts."""
        ...

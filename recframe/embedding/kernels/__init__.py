"""Kernel backends: modules that look up one *group* of tables at once, like fbgemm's TBE.

A kernel takes the flat ids of its features (feature-major, each feature's ids already mapped
into ``[0, num_embeddings)`` of its table), the bag offsets ``[num_features * batch + 1]`` and
optional per-id weights, and returns ``[batch, sum of feature dims]`` (pooled kernels: a weighted
sum per bag in fp32, returned in ``output_dtype``: fp32 by default, autocast's dtype when the
collection asks; mean pooling is done by the caller through the weights) or ``[num_ids, dim]``
fp32 (sequence kernels). Its backward applies the group's sparse optimizer to the touched rows:
nothing else is called by a training loop. Backends and the grouping policy: ``select.py``.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer, TableConfig
    >>> from recframe.embedding.kernels.torch import TorchEmbeddingKernel
    >>> spec = GroupSpec(tables=[TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])],
    ...                  feature_tables=[0], optimizer=SparseOptimizer(name="sgd"), pooled=True,
    ...                  device=torch.device("cpu"))
    >>> kernel = TorchEmbeddingKernel(spec)
    >>> kernel(torch.tensor([1, 2, 3]), torch.tensor([0, 2, 3]), None).shape  # 2 bags of feature f
    torch.Size([2, 4])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from recframe.embedding.config import SparseOptimizer, TableConfig
from recframe.vocab import WeightDtype

DTYPES = {WeightDtype.fp32: torch.float32, WeightDtype.fp16: torch.float16, WeightDtype.bf16: torch.bfloat16}


@dataclass(frozen=True)
class GroupSpec:
    """What one kernel holds.

    Args:
        tables: the group's tables, in collection order.
        feature_tables: for each feature of the group, in input order, the index of its table in ``tables``.
        optimizer: the group's sparse optimizer (all its tables share it).
        pooled: True for bag lookups (sum; the caller folds mean into the weights), False for sequences.
        device: where the tables live.
    """

    tables: list[TableConfig]
    feature_tables: list[int]
    optimizer: SparseOptimizer
    pooled: bool
    device: torch.device


class EmbeddingKernel(Protocol):
    """The interface every backend's kernel module offers (see the module docstring)."""

    def __call__(self, indices: torch.Tensor, offsets: torch.Tensor, per_sample_weights: torch.Tensor | None,
                 output_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The lookup; a pooled output in ``output_dtype`` (the fp32 sums rounded once to it), its gradient too."""
        ...

    def table_weight(self, index: int) -> torch.Tensor:
        """A ``[num_embeddings, dim]`` view of table ``index``'s storage (its dtype is the weight dtype)."""
        ...

    def table_states(self, index: int) -> dict[str, torch.Tensor]:
        """Views of table ``index``'s optimizer states, named as in ``optimizers.STATE_LAYOUT``."""
        ...

    def get_step(self) -> int:
        """The optimizer step count of the group (bias corrections use ``step``; 0 before training)."""
        ...

    def set_step(self, step: int) -> None:
        """Set the optimizer step count (when loading optimizer state)."""
        ...

    @property
    def graph_safe(self) -> bool:
        """Whether a caller's CUDA graph may capture this kernel's forward and backward and replay them.

        True when every launch argument comes from shapes and fixed settings and no host-side state
        changes from step to step (a step count that a replay would not advance, a host counter).
        """
        ...

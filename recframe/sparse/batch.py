"""Batch: what data produces and models consume (dense features, sparse KJT, labels).

Example:
    >>> import torch
    >>> from recframe.sparse import KeyedJaggedTensor
    >>> batch = Batch(
    ...     dense_features=torch.zeros(2, 13),
    ...     sparse_features=KeyedJaggedTensor.from_lengths(["c0"], torch.tensor([4, 5]), torch.tensor([1, 1])),
    ...     labels=torch.tensor([0.0, 1.0]),
    ... )
    >>> batch.batch_size
    2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recframe.sparse.keyed_jagged import KeyedJaggedTensor


@dataclass
class Batch:
    """One batch of samples.

    Args:
        dense_features: ``[batch, num_dense]`` float tensor (``num_dense`` may be 0).
        sparse_features: the sparse features, ``stride() == batch``.
        labels: ``[batch]`` (one task) or ``[batch, num_tasks]`` float tensor.
    """

    dense_features: torch.Tensor
    sparse_features: KeyedJaggedTensor
    labels: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy on ``device`` (Lightning's batch transfer calls this)."""
        return Batch(
            dense_features=self.dense_features.to(device, non_blocking=non_blocking),
            sparse_features=self.sparse_features.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory (DataLoader's ``pin_memory=True`` calls this)."""
        return Batch(
            dense_features=self.dense_features.pin_memory(),
            sparse_features=self.sparse_features.pin_memory(),
            labels=self.labels.pin_memory(),
        )

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Mark every tensor as used by ``stream``."""
        self.dense_features.record_stream(stream)
        self.sparse_features.record_stream(stream)
        self.labels.record_stream(stream)

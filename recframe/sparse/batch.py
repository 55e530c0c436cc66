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

    def layout(self) -> tuple:
        """Shapes, dtypes and devices of its tensors and its sparse features' structure: what a CUDA graph of a
        step bakes in (batches with equal layouts differ only in contents)."""
        return (self.sparse_features.layout(),
                *((tuple(t.shape), t.dtype, t.device) for t in (self.dense_features, self.labels)))

    def clone(self) -> Batch:
        """A copy with its own tensors (same device and layout)."""
        return Batch(self.dense_features.clone(), self.sparse_features.clone(), self.labels.clone())

    def copy_(self, other: Batch) -> Batch:
        """Copy ``other``'s contents into this batch's tensors, in place (equal ``layout()``: the caller checks).

        Example:
            >>> from recframe.sparse import KeyedJaggedTensor
            >>> def make(v): return Batch(torch.full((1, 2), float(v)),
            ...                           KeyedJaggedTensor.from_lengths(["c"], torch.tensor([v]), torch.tensor([1])),
            ...                           torch.tensor([0.0]))
            >>> make(1).copy_(make(7)).dense_features
            tensor([[7., 7.]])
        """
        self.dense_features.copy_(other.dense_features, non_blocking=True)
        self.sparse_features.copy_(other.sparse_features)
        self.labels.copy_(other.labels, non_blocking=True)
        return self

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

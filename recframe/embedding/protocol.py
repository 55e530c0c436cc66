"""EmbeddingModule: what the layers above rely on from an embedding collection, sharded or not.

Models call a collection (``KeyedJaggedTensor -> KeyedTensor``, or a dict of JaggedTensors for
sequence tables) and read ``feature_names``; training finds the collections of a model (their
parameters are not in the dense optimizer: their optimizer is fused into the backward) and saves
and loads their optimizer state with checkpoints. ``EmbeddingBagCollection``,
``EmbeddingCollection`` and the sharded collection (``recframe.distributed``) all offer this; the
training code checks for the protocol, not for those classes.

Example:
    >>> from torch import nn
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> ebc = EmbeddingBagCollection([TableConfig(name="t", num_embeddings=4, embedding_dim=2, feature_names=["f"])],
    ...                              SparseOptimizer(name="sgd"), backend="torch")
    >>> isinstance(ebc, EmbeddingModule), isinstance(nn.Linear(2, 2), EmbeddingModule)
    (True, False)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from recframe.embedding.config import TableConfig
from recframe.sparse import KeyedJaggedTensor


@runtime_checkable
class EmbeddingModule(Protocol):
    """An embedding collection as the layers above see it (module docstring).

    Attributes:
        tables: its tables (all of them, also where this process holds only shards).
        feature_names: the features it looks up, in output order.
    """

    tables: list[TableConfig]
    feature_names: list[str]

    def __call__(self, features: KeyedJaggedTensor) -> Any:
        """Look up the features: a KeyedTensor of pooled embeddings (or a dict of JaggedTensors for sequences)."""
        ...

    def optimizer_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The fused optimizer's state of this process's rows, by table name (for checkpoints)."""
        ...

    def load_optimizer_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore what ``optimizer_state_dict`` gave."""
        ...

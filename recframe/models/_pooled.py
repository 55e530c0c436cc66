"""What models need from an embedding collection: its features and dims, and its output as tensors.

A model reads the collection's features once, at construction, and afterwards only calls
``embeddings(kjt) -> KeyedTensor``: a sharded collection with the same call signature can be
swapped in without the model noticing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recframe.sparse import KeyedTensor


def pooled_feature_dims(embeddings: nn.Module) -> list[tuple[str, int]]:
    """``(feature name, embedding dim)`` for every output key of a pooled collection, in key order.

    Args:
        embeddings: an ``EmbeddingBagCollection`` (anything with ``feature_names`` and ``feature_dims``
            lists describing the keys of the ``KeyedTensor`` it returns).
    """
    names = getattr(embeddings, "feature_names", None)
    dims = getattr(embeddings, "feature_dims", None)
    if names is None or dims is None:
        raise TypeError(f"{type(embeddings).__name__} has no feature_names/feature_dims: "
                        "a model needs an EmbeddingBagCollection")
    if len(names) != len(dims):
        raise ValueError(f"{type(embeddings).__name__}: {len(names)} feature names but {len(dims)} dims")
    return [(str(name), int(dim)) for name, dim in zip(names, dims, strict=True)]


def uniform_dim(features: Sequence[tuple[str, int]], model: str) -> int:
    """The one embedding dim shared by all features (a model that stacks them needs it)."""
    dims = {dim for _, dim in features}
    if len(dims) != 1:
        raise ValueError(f"{model} needs every sparse feature to have the same embedding dim, got "
                         f"{dict(features)}")
    return dims.pop()


def stack_pooled(kt: KeyedTensor, features: Sequence[str], dim: int) -> torch.Tensor:
    """The pooled embeddings of ``features`` as ``[batch, len(features), dim]`` (a view when already in order)."""
    values = kt.values() if kt.keys() == list(features) else KeyedTensor.regroup([kt], [list(features)])[0]
    return values.reshape(values.shape[0], len(features), dim)


def concat_pooled(kt: KeyedTensor, features: Sequence[str]) -> torch.Tensor:
    """The pooled embeddings of ``features`` side by side, ``[batch, sum of dims]``."""
    return kt.values() if kt.keys() == list(features) else KeyedTensor.regroup([kt], [list(features)])[0]

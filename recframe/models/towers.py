"""Dense towers: the multi-layer perceptron and the linear ("wide") part.

Example:
    >>> import torch
    >>> mlp = MLP(in_features=13, layer_sizes=[64, 16])
    >>> mlp(torch.randn(4, 13)).shape
    torch.Size([4, 16])
    >>> wide = WideLinear(num_dense_features=13, num_sparse_features=3, out_features=1)
    >>> wide(torch.randn(4, 13), torch.randn(4, 3, 1)).shape
    torch.Size([4, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import torch
from torch import nn

from recframe.embedding.config import TableConfig
from recframe.models.linear import Linear

Activation = Literal["relu", "gelu", "silu", "sigmoid", "tanh", "identity"]
Norm = Literal["none", "batch", "layer"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _norm(name: str, features: int) -> nn.Module | None:
    if name == "none":
        return None
    if name == "batch":
        return nn.BatchNorm1d(features)
    if name == "layer":
        return nn.LayerNorm(features)
    raise ValueError(f"unknown normalization {name!r}; choose one of ['batch', 'layer', 'none']")


class MLP(nn.Module):
    """A stack of fully connected layers: ``Linear -> [norm] -> activation -> [dropout]`` per layer.

    Args:
        in_features: width of the input.
        layer_sizes: output width of each layer, in order; at least one.
        activation: nonlinearity after each layer: relu, gelu, silu, sigmoid, tanh or identity.
        dropout: probability of zeroing an activation after each layer (0 disables dropout).
        norm: normalization after each linear layer, before the activation: none, batch or layer.
        activate_last: apply norm, activation and dropout after the last layer too; set False when
            the last layer produces logits.
        bias: give every linear layer a bias.

    Example:
        >>> mlp = MLP(13, [512, 256, 64], dropout=0.1, norm="layer")
        >>> mlp(torch.randn(8, 13)).shape
        torch.Size([8, 64])
    """

    def __init__(
        self,
        in_features: int,
        layer_sizes: Sequence[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        norm: Norm = "none",
        activate_last: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in layer_sizes]
        if not sizes:
            raise ValueError("MLP needs at least one layer size")
        if in_features < 1 or any(s < 1 for s in sizes):
            raise ValueError(f"MLP widths must be >= 1, got in_features={in_features}, layer_sizes={sizes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP dropout must be in [0, 1), got {dropout}")
        self.in_features = in_features
        self.layer_sizes = sizes
        self.linears = nn.ModuleList()
        layers: list[nn.Module] = []
        width = in_features
        for i, size in enumerate(sizes):
            linear = Linear(width, size, bias=bias)
            self.linears.append(linear)
            layers.append(linear)
            if activate_last or i < len(sizes) - 1:
                norm_layer = _norm(norm, size)
                if norm_layer is not None:
                    layers.append(norm_layer)
                layers.append(_activation(activation))
                if dropout > 0.0:
                    layers.append(nn.Dropout(dropout))
            width = size
        self.layers = nn.Sequential(*layers)

    @property
    def out_features(self) -> int:
        """Width of the output (the last layer size)."""
        return self.layer_sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, in_features]`` to ``[batch, layer_sizes[-1]]``."""
        return self.layers(x)


class WideLinear(nn.Module):
    """The linear ("wide") part of Wide&Deep and the first-order term of DeepFM.

    ``out = dense @ W + b + sum over sparse features of their per-id weights``. The per-id
    weights live in an embedding collection of tables of dim ``out_features`` (one row per id,
    so sharding treats them like any table); this block receives their pooled output.

    Args:
        num_dense_features: number of dense inputs (0 allowed: then only the bias and sparse part).
        num_sparse_features: number of pooled sparse inputs summed into the output (0 allowed).
        out_features: output width (the number of tasks).

    Example:
        >>> wide = WideLinear(num_dense_features=2, num_sparse_features=4, out_features=2)
        >>> wide(torch.randn(3, 2), torch.randn(3, 4, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(self, num_dense_features: int, num_sparse_features: int, out_features: int = 1) -> None:
        super().__init__()
        if num_dense_features < 0 or num_sparse_features < 0 or out_features < 1:
            raise ValueError(
                f"WideLinear: got num_dense_features={num_dense_features}, "
                f"num_sparse_features={num_sparse_features}, out_features={out_features}"
            )
        self.num_dense_features = num_dense_features
        self.num_sparse_features = num_sparse_features
        self.out_features = out_features
        self.dense = nn.Linear(num_dense_features, out_features, bias=False) if num_dense_features else None
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Combine the parts.

        Args:
            dense: ``[batch, num_dense_features]``.
            sparse: pooled per-id weights, ``[batch, num_sparse_features, out_features]`` (or
                flattened to ``[batch, num_sparse_features * out_features]``).

        Returns:
            ``[batch, out_features]``.
        """
        batch = dense.shape[0]
        out = self.bias.expand(batch, self.out_features)
        if self.dense is not None:
            out = out + self.dense(dense)
        if self.num_sparse_features:
            out = out + sparse.reshape(batch, self.num_sparse_features, self.out_features).sum(dim=1)
        return out


def wide_tables(tables: Sequence[TableConfig], out_features: int = 1, suffix: str = "_wide") -> list[TableConfig]:
    """Tables for the per-id weights of a wide part: one per deep table, same rows and features.

    The rows have ``out_features`` columns (one weight per task) and start at zero, as a linear
    model's weights do; pooling and optimizer are the deep table's. Build the wide
    ``EmbeddingBagCollection`` from them.

    Args:
        tables: the deep tables.
        out_features: columns per row (the number of tasks).
        suffix: appended to each table name (wide table names must differ from the deep ones).

    Example:
        >>> deep = [TableConfig(name="t0", num_embeddings=100, embedding_dim=16, feature_names=["f0"])]
        >>> [(t.name, t.embedding_dim, t.init) for t in wide_tables(deep, out_features=2)]
        [('t0_wide', 2, 'zeros')]
    """
    return [
        replace(t, name=f"{t.name}{suffix}", embedding_dim=out_features, init="zeros",
                feature_names=list(t.feature_names))
        for t in tables
    ]

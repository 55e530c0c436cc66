"""Dense parameter counts and dense forward FLOPs per sample, block by block.

The planner and the performance reports use these numbers. Each model composes them in its
``dense_flops_per_sample()`` and ``dense_parameter_count()`` methods.

Counting convention (the one MLPerf and most papers use for matrix products):

- a multiply-add is 2 FLOPs: a ``Linear(n, m)`` costs ``2 * n * m`` per sample, plus ``m`` for its bias;
- every other elementwise add or multiply is 1 FLOP (Hadamard products and residual adds of
  cross layers, the squares and sums of FM, the sums of the wide part);
- a dot product of two ``D``-vectors is ``D`` multiply-adds = ``2 * D`` FLOPs, and only the dot
  products a block outputs are counted (``DotInteraction`` computes the whole Gram matrix with one
  ``bmm``, about twice the counted work: the count is what the model needs, not what a kernel does);
- not counted: activations, normalization, dropout, concatenations and reshapes, the loss, and the
  embedding lookups and pooling (those are sparse work, costed by the embedding planner).

Example:
    >>> from recframe.models.towers import MLP
    >>> mlp_flops(MLP(13, [512, 256]))  # (2*13*512 + 512) + (2*512*256 + 256)
    276224
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from recframe.models.heads import MultiTaskHead
from recframe.models.interactions import CrossNet, DotInteraction, FMInteraction, LowRankCrossNet
from recframe.models.towers import MLP, WideLinear


def linear_flops(in_features: int, out_features: int, bias: bool = True) -> int:
    """FLOPs of ``y = x W^T (+ b)`` for one sample.

    Args:
        in_features: input width.
        out_features: output width.
        bias: whether a bias is added (``out_features`` more FLOPs).
    """
    return 2 * in_features * out_features + (out_features if bias else 0)


def mlp_flops(mlp: MLP) -> int:
    """FLOPs of an MLP's linear layers for one sample (activations and norms are not counted)."""
    return sum(linear_flops(lin.in_features, lin.out_features, lin.bias is not None) for lin in mlp.linears)


def head_flops(head: MultiTaskHead) -> int:
    """FLOPs of the output layer: ``Linear(in_features, num_tasks)``."""
    return linear_flops(head.in_features, head.num_tasks)


def dot_interaction_flops(block: DotInteraction, embedding_dim: int) -> int:
    """``2 * D`` FLOPs for each dot product in the output (see the module docstring)."""
    return block.num_pairs * 2 * embedding_dim


def cross_net_flops(block: CrossNet) -> int:
    """DCN v1 layer ``x0 * (x . w) + b + x`` over width ``d``: ``2d`` (dot) + ``d`` (scale) + ``2d`` (adds)."""
    return block.num_layers * 5 * block.in_features


def low_rank_cross_net_flops(block: LowRankCrossNet) -> int:
    """DCNv2 layer ``x0 * (U (V x) + b) + x`` over width ``d``, rank ``r``.

    ``2dr`` (V) + ``2rd + d`` (U and its bias) + ``d`` (Hadamard with ``x0``) + ``d`` (residual add).
    """
    d, r = block.in_features, block.low_rank
    return block.num_layers * (linear_flops(d, r, bias=False) + linear_flops(r, d) + 2 * d)


def fm_flops(block: FMInteraction, num_fields: int, embedding_dim: int) -> int:
    """FM second-order term over ``F`` fields of dim ``D``.

    ``(F-1)D`` adds for the field sum, ``D`` multiplies to square it, ``FD`` multiplies for the
    squares, ``(F-1)D`` adds to sum them, ``D`` subtractions, ``D`` multiplies by 0.5, and with
    ``reduce`` ``D-1`` adds over the dimensions.
    """
    f, d = num_fields, embedding_dim
    total = 2 * (f - 1) * d + f * d + 3 * d
    return total + (d - 1 if block.reduce else 0)


def wide_linear_flops(block: WideLinear) -> int:
    """Wide part: ``2 * n_dense * out`` (dense product) + ``out`` (bias) + ``F * out`` (sparse sums)."""
    out = block.out_features
    dense = 2 * block.num_dense_features * out
    return dense + out + block.num_sparse_features * out


def dense_parameter_count(model: nn.Module, sparse_modules: Iterable[nn.Module]) -> int:
    """Number of parameters of ``model`` outside its embedding modules.

    Args:
        model: the whole model.
        sparse_modules: its embedding collections (their parameters, if any, are not dense).

    Example:
        >>> dense_parameter_count(nn.Sequential(nn.Linear(3, 2), nn.Embedding(10, 4)), [])
        48
    """
    excluded = {id(p) for m in sparse_modules for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)

"""Dense parameter counts, dense forward FLOPs and activation elements per sample, block by block.

The planner, the step simulator and the performance reports use these numbers. Each model composes them in its
``dense_flops_per_sample()``, ``dense_activations_per_sample()`` and ``dense_parameter_count()`` methods.

Counting convention (the one MLPerf and most papers use for matrix products):

- a multiply-add is 2 FLOPs: a ``Linear(n, m)`` costs ``2 * n * m`` per sample, plus ``m`` for its bias;
- every other elementwise add or multiply is 1 FLOP (Hadamard products and residual adds of
  cross layers, the squares and sums of FM, the sums of the wide part);
- a dot product of two ``D``-vectors is ``D`` multiply-adds = ``2 * D`` FLOPs, and only the dot
  products a block outputs are counted (``DotInteraction`` computes the whole Gram matrix with one
  ``bmm``, about twice the counted work: the count is what the model needs, not what a kernel does);
- not counted: activations, normalization, dropout, concatenations and reshapes, the loss, and the
  embedding lookups and pooling (those are sparse work, costed by the embedding planner).

Activation elements (``*_activations``): the values per sample a block's forward writes, counted once per
tensor a block produces: each linear layer's output width (an MLP layer's ``out_features``, the head's tasks;
the activation, bias and norm that follow run in place of it, and a step's several passes over it are the step
simulator's ``activation_passes``), a cross layer's output ``d`` (and a low-rank layer's ``r``-wide and ``d``-wide
projections), ``DotInteraction``'s combined ``n x D`` input, its pairs and its output, a concatenation's output,
FM's squares and sums, the wide part's output. Not counted: the dense input, the pooled embeddings (sparse
work's output) and the loss. The step simulator times them as memory traffic (``step_time.DeviceProfile``).

Example:
    >>> from recframe.models.towers import MLP
    >>> mlp_flops(MLP(13, [512, 256]))  # (2*13*512 + 512) + (2*512*256 + 256)
    276224
    >>> mlp_activations(MLP(13, [512, 256]))  # 512 + 256
    768
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


def mlp_activations(mlp: MLP) -> int:
    """Activation elements of an MLP for one sample: each layer's output width.

    Args:
        mlp: the MLP.

    Example:
        >>> mlp_activations(MLP(4, [8, 2]))
        10
    """
    return sum(lin.out_features for lin in mlp.linears)


def head_activations(head: MultiTaskHead) -> int:
    """Activation elements of the output layer: one logit a task.

    Args:
        head: the head.

    Example:
        >>> head_activations(MultiTaskHead(8))
        1
    """
    return head.num_tasks


def dot_interaction_activations(block: DotInteraction, embedding_dim: int) -> int:
    """``DotInteraction``'s combined ``n x D`` input, its pair dot products and its output (``output_dim``).

    Args:
        block: the interaction.
        embedding_dim: ``D``.

    Example:
        >>> dot_interaction_activations(DotInteraction(2), 4)  # 3 x 4 combined + 3 pairs + (4 + 3) out
        22
    """
    n = block.num_sparse_features + 1
    return n * embedding_dim + block.num_pairs + block.output_dim(embedding_dim)


def cross_net_activations(block: CrossNet) -> int:
    """DCN v1: each layer writes its width ``d`` (the scaled ``x0``'s adds fused into its output).

    Args:
        block: the cross network.

    Example:
        >>> cross_net_activations(CrossNet(16, 3))
        48
    """
    return block.num_layers * block.in_features


def low_rank_cross_net_activations(block: LowRankCrossNet) -> int:
    """DCNv2: each layer writes ``V x`` (``r``), ``U (V x) + b`` (``d``) and its output (``d``).

    Args:
        block: the low-rank cross network.

    Example:
        >>> low_rank_cross_net_activations(LowRankCrossNet(32, 2, 4))  # 2 x (4 + 32 + 32)
        136
    """
    return block.num_layers * (block.low_rank + 2 * block.in_features)


def fm_activations(block: FMInteraction, num_fields: int, embedding_dim: int) -> int:
    """FM over ``F`` fields of dim ``D``: the squares (``F x D``), the field sum and the output (``D`` each), and
    with ``reduce`` one more value.

    Args:
        block: the FM block.
        num_fields: ``F``.
        embedding_dim: ``D``.

    Example:
        >>> fm_activations(FMInteraction(), 3, 4)  # 12 + 4 + 4 + 1
        21
    """
    return (num_fields + 2) * embedding_dim + (1 if block.reduce else 0)


def wide_linear_activations(block: WideLinear) -> int:
    """Wide part: its output (``out_features``).

    Args:
        block: the wide part.

    Example:
        >>> wide_linear_activations(WideLinear(2, 3, 2))
        2
    """
    return block.out_features


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

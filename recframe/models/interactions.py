"""Feature interactions: DLRM dot products, DCN cross networks (v1 and low-rank v2), FM.

Example:
    >>> import torch
    >>> dot = DotInteraction(num_sparse_features=3)
    >>> dot(torch.randn(2, 8), torch.randn(2, 3, 8)).shape  # 8 + 4 * 3 / 2 pairs
    torch.Size([2, 14])
    >>> LowRankCrossNet(in_features=32, num_layers=2, low_rank=4)(torch.randn(2, 32)).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from recframe.models.low_rank_cross import low_rank_cross


class PairDots(torch.autograd.Function):
    """The dot products ``<c_i, c_j>`` of chosen pairs of the ``n`` vectors of each sample, with a one-bmm backward.

    Forward: the Gram matrix ``C C^T`` (one bmm), flattened, at ``pair_index`` (``i * n + j``). Backward: the
    gradient ``G`` scattered into an ``n x n`` matrix gives ``dC = (G + G^T) C``, one bmm where autograd's bmm
    backward runs two (measured on the 2-core CPU, DLRM's 27 x 64 at batch 2048: 10 ms a step against 14.5).

    Example:
        >>> c = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
        >>> index = torch.tensor([3, 6, 7])  # (1, 0), (2, 0), (2, 1) of a 3 x 3 Gram matrix
        >>> torch.autograd.gradcheck(PairDots.apply, (c, index))
        True
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, combined: torch.Tensor,  # type: ignore[override]
                pair_index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(combined, pair_index)
        return torch.bmm(combined, combined.transpose(1, 2)).flatten(1).index_select(1, pair_index)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        combined, pair_index = ctx.saved_tensors  # type: ignore[attr-defined]
        batch, n, _ = combined.shape
        full = grad.new_zeros(batch, n * n).index_copy_(1, pair_index, grad).view(batch, n, n)
        # under autocast the forward's bmm ran (and the gradient arrives) in the lower precision: so does this one
        grad_combined = torch.bmm(full + full.transpose(1, 2), combined.to(grad.dtype))
        return grad_combined.to(combined.dtype), None


class DotInteraction(nn.Module):
    """DLRM's pairwise interaction: dot products between every pair of feature vectors.

    The dense embedding and the ``F`` pooled sparse embeddings (all of dim ``D``) form ``n = F + 1``
    vectors; the output holds the ``n * (n - 1) / 2`` dot products of distinct pairs (``n * (n + 1) / 2``
    with ``self_interaction``), preceded by the dense embedding when ``skip_dense`` is set (as in DLRM).

    Args:
        num_sparse_features: ``F``, the number of pooled sparse embeddings.
        self_interaction: also keep each vector's dot product with itself.
        skip_dense: prepend the dense embedding to the output (DLRM does).

    Example:
        >>> dot = DotInteraction(num_sparse_features=26)
        >>> dot.output_dim(embedding_dim=64)
        415
        >>> dot(torch.randn(4, 64), torch.randn(4, 26, 64)).shape
        torch.Size([4, 415])
    """

    def __init__(self, num_sparse_features: int, self_interaction: bool = False, skip_dense: bool = True) -> None:
        super().__init__()
        if num_sparse_features < 0:
            raise ValueError(f"DotInteraction: num_sparse_features must be >= 0, got {num_sparse_features}")
        self.num_sparse_features = num_sparse_features
        self.self_interaction = self_interaction
        self.skip_dense = skip_dense
        n = num_sparse_features + 1
        rows, cols = torch.tril_indices(n, n, offset=0 if self_interaction else -1)
        self.register_buffer("_pair_index", rows * n + cols, persistent=False)

    @property
    def num_pairs(self) -> int:
        """Number of dot products in the output."""
        return int(self._pair_index.numel())

    def output_dim(self, embedding_dim: int) -> int:
        """Width of the output for embeddings of dim ``embedding_dim``."""
        return self.num_pairs + (embedding_dim if self.skip_dense else 0)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Interact.

        Args:
            dense: ``[batch, D]`` output of the bottom MLP.
            sparse: ``[batch, F, D]`` pooled embeddings.

        Returns:
            ``[batch, output_dim(D)]``.
        """
        if sparse.dim() != 3 or sparse.shape[1] != self.num_sparse_features or sparse.shape[2] != dense.shape[1]:
            raise ValueError(
                f"DotInteraction: expected sparse of shape [batch, {self.num_sparse_features}, {dense.shape[1]}], "
                f"got {tuple(sparse.shape)}"
            )
        combined = torch.cat([dense.unsqueeze(1), sparse], dim=1)  # [B, n, D]
        if torch.is_grad_enabled() and combined.requires_grad:
            pairs = PairDots.apply(combined, self._pair_index)
        else:  # inference and exports: plain ops
            pairs = torch.bmm(combined, combined.transpose(1, 2)).flatten(1).index_select(1, self._pair_index)
        return torch.cat([dense, pairs], dim=1) if self.skip_dense else pairs


class CrossNet(nn.Module):
    """The cross network of DCN (v1): ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l``.

    Each layer has one weight vector ``w_l`` and one bias ``b_l`` of the input width, so it adds an
    explicit feature cross of one more degree at a cost linear in the width.

    Args:
        in_features: width ``d`` of the input (and of the output).
        num_layers: number of cross layers (0 gives the identity).

    Example:
        >>> cross = CrossNet(in_features=16, num_layers=3)
        >>> cross(torch.randn(5, 16)).shape
        torch.Size([5, 16])
    """

    def __init__(self, in_features: int, num_layers: int) -> None:
        super().__init__()
        if in_features < 1 or num_layers < 0:
            raise ValueError(f"CrossNet: got in_features={in_features}, num_layers={num_layers}")
        self.in_features = in_features
        self.num_layers = num_layers
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(in_features) / in_features**0.5) for _ in range(num_layers)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(in_features)) for _ in range(num_layers)])

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, d]`` to ``[batch, d]``."""
        x = x0
        for w, b in zip(self.weights, self.biases, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x


class LowRankCrossNet(nn.Module):
    """The low-rank cross network of DCNv2 (as in the MLPerf DLRM-DCNv2 model).

    ``x_{l+1} = x_0 * (U_l (V_l x_l) + b_l) + x_l`` with ``V_l`` of shape ``[r, d]`` and ``U_l`` of
    shape ``[d, r]``: the full-rank ``W_l = U_l V_l`` of DCNv2 factored through rank ``r``.

    Args:
        in_features: width ``d`` of the input (and of the output).
        num_layers: number of cross layers (0 gives the identity).
        low_rank: the rank ``r`` of each layer's weight.

    Example:
        >>> cross = LowRankCrossNet(in_features=27 * 16, num_layers=3, low_rank=32)
        >>> cross(torch.randn(2, 27 * 16)).shape
        torch.Size([2, 432])
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int) -> None:
        super().__init__()
        if in_features < 1 or num_layers < 0 or low_rank < 1:
            raise ValueError(
                f"LowRankCrossNet: got in_features={in_features}, num_layers={num_layers}, low_rank={low_rank}"
            )
        self.in_features = in_features
        self.num_layers = num_layers
        self.low_rank = low_rank
        self.down = nn.ModuleList([nn.Linear(in_features, low_rank, bias=False) for _ in range(num_layers)])
        self.up = nn.ModuleList([nn.Linear(low_rank, in_features, bias=True) for _ in range(num_layers)])
        for down, up in zip(self.down, self.up, strict=True):
            nn.init.xavier_normal_(down.weight)
            nn.init.xavier_normal_(up.weight)
            nn.init.zeros_(up.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, d]`` to ``[batch, d]``. Under autocast the layers' stream is in autocast's dtype (the
        ``up`` products are; without the cast ``x0`` would keep every elementwise op and its gradient in fp32
        and cast again before each layer's product). With gradients the layers are one autograd node with a
        fused backward (``low_rank_cross``)."""
        device = x0.device.type
        if torch.is_autocast_enabled(device):
            x0 = x0.to(torch.get_autocast_dtype(device))
        return low_rank_cross(x0, [d.weight for d in self.down], [u.weight for u in self.up],
                              [u.bias for u in self.up])


class FMInteraction(nn.Module):
    """The second-order term of a factorization machine over ``F`` field vectors of dim ``D``.

    ``sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)``, computed in ``O(F * D)``.

    Args:
        reduce: sum over the ``D`` dimensions (output ``[batch, 1]``); if False keep them
            (output ``[batch, D]``, the "bi-interaction" pooling of NFM).

    Example:
        >>> fm = FMInteraction()
        >>> fm(torch.randn(4, 10, 8)).shape
        torch.Size([4, 1])
    """

    def __init__(self, reduce: bool = True) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, F, D]`` to ``[batch, 1]`` (``reduce``) or ``[batch, D]``."""
        if fields.dim() != 3:
            raise ValueError(f"FMInteraction: expected [batch, fields, dim], got shape {tuple(fields.shape)}")
        total = fields.sum(dim=1)
        out = 0.5 * (total * total - (fields * fields).sum(dim=1))
        return out.sum(dim=1, keepdim=True) if self.reduce else out

"""The portable kernel: plain torch ops, the optimizer applied to the touched rows in backward.

All tables of a group have the same dim (the grouping policy guarantees it) and live in one
``[total_rows, dim]`` tensor, so a group is one ``embedding_bag`` forward and one sparse update,
whatever its number of tables. Backward never builds a dense table gradient: it sums the per-id
gradients into one row each (sort, then ``index_add_`` or a CSR product), then ``optimizers.sparse_update``
applies the step to those rows only. Runs on any device and dtype; everything is vectorized.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer, TableConfig
    >>> from recframe.embedding.kernels import GroupSpec
    >>> spec = GroupSpec(tables=[TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])],
    ...                  feature_tables=[0], optimizer=SparseOptimizer(name="adagrad", lr=0.1), pooled=True,
    ...                  device=torch.device("cpu"))
    >>> kernel = TorchEmbeddingKernel(spec)
    >>> out = kernel(torch.tensor([1, 1]), torch.tensor([0, 2]), None)
    >>> out.sum().backward()  # updates row 1 with the summed gradient 2.0 per element
    >>> kernel.table_states(0)["momentum1"][1]
    tensor([4., 4., 4., 4.])
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from recframe.embedding.kernels import GroupSpec
from recframe.embedding.kernels.stacked import StackedTables
from recframe.embedding.optimizers import sparse_update


class TorchEmbeddingKernel(StackedTables):
    """One group of same-dim tables in one tensor, looked up with torch ops (see the module docstring).

    Args:
        spec: the group (tables, features, optimizer, pooled or sequence, device).
    """

    def __init__(self, spec: GroupSpec) -> None:
        super().__init__(spec, "torch")
        self.single_table = len(spec.tables) == 1

    # ---- the EmbeddingKernel interface --------------------------------------------------------
    def forward(self, indices: torch.Tensor, offsets: torch.Tensor,
                per_sample_weights: torch.Tensor | None) -> torch.Tensor:
        """Look up the group's features (see ``recframe.embedding.kernels``).

        Args:
            indices: int64 ids, feature-major, each in its table's range.
            offsets: int64 ``[num_features * batch + 1]`` bag boundaries.
            per_sample_weights: float per-id weights (pooled kernels only) or None.

        Returns:
            ``[batch, num_features * dim]`` fp32 (pooled) or ``[num_ids, dim]`` fp32 (sequence).
        """
        rows = self._global_rows(indices, offsets)
        anchor = torch.empty(0, device=self.weight.device, requires_grad=torch.is_grad_enabled())
        return _FusedLookup.apply(anchor, self, rows, offsets, per_sample_weights)

    # ---- internals ----------------------------------------------------------------------------
    def _global_rows(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Table-local ids -> rows of the group tensor (ids are trusted: the collection checks them)."""
        if self.single_table:
            return indices
        batch = (offsets.numel() - 1) // self.num_features
        per_feature = offsets[::batch].diff() if batch > 0 else offsets.new_zeros(self.num_features)
        return indices + self.feature_row_start.repeat_interleave(per_feature, output_size=indices.numel())

    def lookup(self, rows: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """The forward math on group rows (no autograd)."""
        if not self.spec.pooled:
            return self.weight.index_select(0, rows).float()
        if self.weight.dtype == torch.float32:
            table, ids = self.weight, rows
        else:  # accumulate in fp32, as fbgemm does for fp16 storage
            table, ids = self.weight.index_select(0, rows).float(), torch.arange(rows.numel(), device=rows.device)
        pooled = F.embedding_bag(ids, table, offsets, mode="sum", include_last_offset=True,
                                 per_sample_weights=None if weights is None else weights.float())
        batch = (offsets.numel() - 1) // self.num_features
        return pooled.view(self.num_features, batch, self.dim).transpose(0, 1).reshape(batch, -1)

    def apply_gradient(self, rows: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None,
                       grad_out: torch.Tensor) -> None:
        """Sum the gradient of every lookup into its row, then apply the optimizer to those rows."""
        self.step += 1
        if rows.numel() == 0:
            return
        # Lookups sorted by row (stable: duplicates keep their order, so the sums are reproducible);
        # sort + unique_consecutive is much faster than torch.unique(return_inverse=True) on CPU.
        sorted_rows, order = rows.sort(stable=True)
        unique_rows, counts = torch.unique_consecutive(sorted_rows, return_counts=True)
        if self.spec.pooled:
            batch = (offsets.numel() - 1) // self.num_features
            bags = self.num_features * batch
            bag_of_id = torch.arange(bags, device=rows.device).repeat_interleave(
                offsets.diff(), output_size=rows.numel()
            ).index_select(0, order)
            # Bag f * batch + b (feature-major) is row b * num_features + f of grad_out seen as
            # [batch * num_features, dim]: remap the ids rather than transposing the gradient.
            source = (bag_of_id % batch) * self.num_features + bag_of_id // batch
            grad_source = grad_out.reshape(bags, self.dim).float()
        else:
            source, grad_source = order, grad_out.float()
        scale = None if weights is None else weights.index_select(0, order).float()
        grad_rows = sum_rows(grad_source, source, scale, counts, sparse_matmul=grad_source.is_cuda)
        states = {name: getattr(self, name) for name in self.state_names}
        sparse_update(self.spec.optimizer, self.weight, states, unique_rows, grad_rows, self.step)


def sum_rows(grad_source: torch.Tensor, source: torch.Tensor, scale: torch.Tensor | None, counts: torch.Tensor,
             sparse_matmul: bool) -> torch.Tensor:
    """Per touched row, the sum of its lookups' gradients: ``out[u] = sum_i scale_i * grad_source[source_i]``.

    The lookups ``i`` of row ``u`` are consecutive (sorted by row), ``counts[u]`` of them. With
    ``sparse_matmul`` this is one CSR matrix product (no ``[lookups, dim]`` intermediate: about 4x
    faster on CUDA); otherwise a gather and an ``index_add_`` (faster on CPU).

    Args:
        grad_source: ``[sources, dim]`` fp32 gradients (of bags, or of ids for sequences).
        source: for each lookup (in row order), its row in ``grad_source``.
        scale: per-lookup weight (in row order) or None for 1.
        counts: lookups per touched row.
        sparse_matmul: use the CSR product.

    Returns:
        ``[len(counts), dim]`` fp32.
    """
    unique, device = counts.numel(), grad_source.device
    if unique == source.numel():  # no row looked up twice: the sums are the gradients themselves
        grad_ids = grad_source.index_select(0, source)
        return grad_ids if scale is None else grad_ids.mul_(scale.unsqueeze(1))
    # cuSPARSE refuses a CSR matrix with more entries than cells (a hot row looked up several times
    # in one bag of a tiny table): sum those with index_add_.
    if sparse_matmul and source.numel() <= unique * grad_source.shape[0]:
        crow = torch.zeros(unique + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, dim=0, out=crow[1:])
        values = scale if scale is not None else torch.ones(source.numel(), device=device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta", once per process
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_csr_tensor(crow, source, values, size=(unique, grad_source.shape[0]),
                                             check_invariants=False)
        return matrix @ grad_source
    segment = torch.arange(unique, device=device).repeat_interleave(counts, output_size=source.numel())
    grad_ids = grad_source.index_select(0, source)
    if scale is not None:
        grad_ids.mul_(scale.unsqueeze(1))
    return torch.zeros(unique, grad_source.shape[1], device=device).index_add_(0, segment, grad_ids)


class _FusedLookup(torch.autograd.Function):
    """Forward: the lookup. Backward: the optimizer step on the touched rows; no gradient flows out."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, kernel: TorchEmbeddingKernel, rows: torch.Tensor,  # noqa: ANN001
                offsets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        ctx.kernel = kernel
        ctx.save_for_backward(rows, offsets, weights)
        return kernel.lookup(rows, offsets, weights)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[None, None, None, None, None]:  # noqa: ANN001
        rows, offsets, weights = ctx.saved_tensors
        ctx.kernel.apply_gradient(rows, offsets, weights, grad_out)
        return None, None, None, None, None

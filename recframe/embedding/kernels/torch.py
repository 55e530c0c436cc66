"""The portable kernel: plain torch ops, the optimizer applied to the touched rows in backward.

All tables of a group have the same dim (the grouping policy guarantees it) and live in one
``[total_rows, dim]`` tensor, so a group is one ``embedding_bag`` forward and one sparse update,
whatever its number of tables. Backward never builds a dense table gradient: it sums the per-id
gradients into one row each (sort, then ``index_add_`` or a CSR product), then ``optimizers.sparse_update``
applies the step to those rows only. Runs on any device and dtype; everything is vectorized, and a
step never waits on the host: sizes come from the number of lookups, not from the number of
distinct rows (see ``TorchEmbeddingKernel.apply_gradient``).

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
from recframe.sparse.ops import repeat_segments


class TorchEmbeddingKernel(StackedTables):
    """One group of same-dim tables in one tensor, looked up with torch ops (see the module docstring).

    Args:
        spec: the group (tables, features, optimizer, pooled or sequence, device).
    """

    def __init__(self, spec: GroupSpec) -> None:
        super().__init__(spec, "torch", scratch_rows=1)
        self.scratch_row = self.table_starts[-1]  # where backward sends the slots of no touched row
        self.single_table = len(spec.tables) == 1

    # ---- the EmbeddingKernel interface --------------------------------------------------------
    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, per_sample_weights: torch.Tensor | None,
                output_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Look up the group's features (see ``recframe.embedding.kernels``).

        Args:
            indices: int64 ids, feature-major, each in its table's range.
            offsets: int64 ``[num_features * batch + 1]`` bag boundaries.
            per_sample_weights: float per-id weights (pooled kernels only) or None.
            output_dtype: the pooled output's dtype (the fp32 sums cast to it; sequence kernels: fp32 only).

        Returns:
            ``[batch, num_features * dim]`` in ``output_dtype`` (pooled) or ``[num_ids, dim]`` fp32 (sequence).
        """
        rows = self._global_rows(indices, offsets)
        anchor = torch.empty(0, device=self.weight.device, requires_grad=torch.is_grad_enabled())
        out = _FusedLookup.apply(anchor, self, rows, offsets, per_sample_weights)
        return out if out.dtype == output_dtype else out.to(output_dtype)

    # ---- internals ----------------------------------------------------------------------------
    def _global_rows(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Table-local ids -> rows of the group tensor (ids are trusted: the collection checks them)."""
        if self.single_table:
            return indices
        batch = (offsets.numel() - 1) // self.num_features
        per_feature = offsets[::batch].diff() if batch > 0 else offsets.new_zeros(self.num_features)
        return indices + repeat_segments(self.feature_row_start, per_feature, indices.numel())

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
        """Sum the gradient of every lookup into its row, then apply the optimizer to those rows.

        No host sync: the number of touched rows is data, so everything is sized by the number of
        lookups ``n`` (from shapes). Slot ``s`` holds the ``s``-th touched row (in row order) and the
        sum of its gradients; the slots past the last touched row hold the scratch row and a zero
        gradient, and their update lands in the scratch row, which no table reads.
        """
        self.step += 1
        if rows.numel() == 0:
            return
        # Lookups sorted by row (stable: duplicates keep their order, so the sums are reproducible).
        sorted_rows, order = rows.sort(stable=True)
        slot = touched_slots(sorted_rows)
        slot_rows = torch.full_like(sorted_rows, self.scratch_row).index_copy_(0, slot, sorted_rows)
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
        grad_rows = sum_rows(grad_source, source, scale, slot, sparse_matmul=grad_source.is_cuda)
        states = {name: getattr(self, name) for name in self.state_names}
        sparse_update(self.spec.optimizer, self.weight, states, slot_rows, grad_rows, self.step)


def touched_slots(sorted_rows: torch.Tensor) -> torch.Tensor:
    """For each lookup (sorted by row), the index of its row among the distinct rows: ``[0, 0, 1, 2, 2, ...]``.

    Computed on the device (a row starts where it differs from its predecessor), without a host sync.

    Args:
        sorted_rows: 1-D sorted rows, at least one.
    """
    starts = torch.ones_like(sorted_rows, dtype=torch.int64)
    torch.ne(sorted_rows[1:], sorted_rows[:-1], out=starts[1:])
    return starts.cumsum_(0).sub_(1)


def sum_rows(grad_source: torch.Tensor, source: torch.Tensor, scale: torch.Tensor | None, slot: torch.Tensor,
             sparse_matmul: bool) -> torch.Tensor:
    """Per slot, the sum of its lookups' gradients: ``out[u] = sum_{i: slot_i = u} scale_i * grad_source[source_i]``.

    The lookups ``i`` of a slot are consecutive (sorted by row), and there are as many slots as
    lookups (the slots that no lookup fills get zeros): every size comes from shapes, none from the
    data. With ``sparse_matmul`` this is one CSR matrix product (no ``[lookups, dim]`` intermediate:
    about 4x faster on CUDA); otherwise a gather and an ``index_add_`` (faster on CPU).

    Args:
        grad_source: ``[sources, dim]`` fp32 gradients (of bags, or of ids for sequences).
        source: for each lookup (in row order), its row in ``grad_source``.
        scale: per-lookup weight (in row order) or None for 1.
        slot: for each lookup (in row order), its slot, non-decreasing (``touched_slots``).
        sparse_matmul: use the CSR product.

    Returns:
        ``[len(slot), dim]`` fp32.
    """
    slots, device = slot.numel(), grad_source.device
    if sparse_matmul:  # (as many rows as entries: never more entries than cells, which cuSPARSE refuses)
        crow = torch.searchsorted(slot, torch.arange(slots + 1, device=device))
        values = scale if scale is not None else torch.ones(slots, device=device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta", once per process
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_csr_tensor(crow, source, values, size=(slots, grad_source.shape[0]),
                                             check_invariants=False)
        return matrix @ grad_source
    grad_ids = grad_source.index_select(0, source)
    if scale is not None:
        grad_ids.mul_(scale.unsqueeze(1))
    return torch.zeros(slots, grad_source.shape[1], device=device).index_add_(0, slot, grad_ids)


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

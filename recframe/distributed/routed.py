"""RoutedOutput: the rows of routed shards (row_wise_routed) back to the samples' ranks, pooled there.

A rank sends each routed slot the distinct ids of its batch once, in increasing order (``input_dist``). A
routed shard looks up every id it received as a bag of one (an EmbeddingCollection: one
``D``-wide row per id, no pooling). Its rows travel back in one all-to-all of their own
(``RowsAllToAll``), in the order the ids came: for each source rank, the shard's routed slots in
slot order, each slot's distinct ids (as the source sent them, ``input_dist.RoutedIds``). The
source rank expands them to one row per id of its batch (``RoutedIds.inverse``) and pools each
feature's rows into its ``B`` bags:
``sum_i w_i e_i`` (``w`` the per-id weights or 1), divided by the bag's size for a mean table,
as ``recframe.embedding.ids`` does for an unsharded table. Backward: autograd gives each row its
gradient (``w_i`` times its bag's), summed over the repeats of its id on the rank, which goes back to
the shard in the reverse all-to-all; the shard's fused optimizer aggregates the same id's rows from
several ranks as the unsharded table's aggregates its duplicate ids (equal up to the order of the sums).

The rows' all-to-all takes the pooled output (``OutputDist``'s result) as an input and returns it
unchanged, so that on every rank it runs after the pooled all-to-all forward and before it in
backward: the ranks issue their collectives in the same order.

Example:
    >>> from recframe.distributed.layout import ShardLayout
    >>> from recframe.distributed.plan import ShardingPlan, TablePlacement
    >>> from recframe.embedding.config import TableConfig
    >>> tables = [TableConfig(name="t", num_embeddings=10, embedding_dim=2, feature_names=["f"], pooling="mean")]
    >>> layout = ShardLayout(tables, ShardingPlan(1, {"t": TablePlacement("row_wise_routed", [0])}), world_size=1)
    >>> routed = RoutedOutput(layout, rank=0, group=None, grad_scale=1.0)
    >>> rows = [torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])]  # one row per id of slot 0
    >>> routed.pool(rows, torch.tensor([0, 0, 1]), None, torch.tensor([2, 1]), batch=2).tolist()  # bags of 2 and 1
    [[2.0, 3.0], [5.0, 6.0]]
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from recframe.distributed.layout import ShardLayout
from recframe.distributed.pending_input import RoutedIds
from recframe.distributed.qcomms import CommsPrecision, all_to_all_float
from recframe.vocab import Pooling


class RowsAllToAll(torch.autograd.Function):
    """``apply(wide, send, send_splits, recv_splits, group, grad_scale, precision) -> (wide, recv)``.

    Args:
        wide: the pooled output, returned as it is (it orders this collective after the pooled one).
        send: flat fp32 rows for each destination rank, rank 0's first.
        send_splits: values for each rank.
        recv_splits: values from each rank.
        group: the process group.
        grad_scale: factor of the gradients sent back (``1 / world`` for mean losses).
        precision: the wire formats forward and backward (``qcomms.CommsPrecision``).
    """

    @staticmethod
    def forward(ctx, wide: torch.Tensor, send: torch.Tensor, send_splits: list[int],  # noqa: ANN001
                recv_splits: list[int], group: dist.ProcessGroup | None, grad_scale: float,
                precision: CommsPrecision) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.splits, ctx.group, ctx.grad_scale, ctx.precision = (send_splits, recv_splits), group, grad_scale, precision
        return wide, all_to_all_float(send, send_splits, recv_splits, group, precision.forward)

    @staticmethod
    def backward(ctx, grad_wide: torch.Tensor, grad_recv: torch.Tensor):  # noqa: ANN001, ANN205
        send_splits, recv_splits = ctx.splits
        grad = grad_recv.float() * ctx.grad_scale if ctx.grad_scale != 1.0 else grad_recv.float()
        back = all_to_all_float(grad.contiguous(), recv_splits, send_splits, ctx.group, ctx.precision.backward)
        return grad_wide, back, None, None, None, None, None


class RoutedOutput:
    """The rows' all-to-all of one rank and the pooling of its samples' rows (see the module docstring).

    Args:
        layout: the collection's shard layout.
        rank: this rank in ``group``.
        group: the process group (None = the default group).
        grad_scale: factor of the gradients sent back (``1 / world`` for mean losses, else 1).
        precision: the all-to-all's wire formats (``qcomms``; default fp32 both ways).

    Example:
        >>> values = routed(values, rows_by_feature, pending.counts, pending.routed, lengths)  # doctest: +SKIP
    """

    def __init__(self, layout: ShardLayout, rank: int, group: dist.ProcessGroup | None, grad_scale: float,
                 precision: CommsPrecision | None = None) -> None:
        self.rank, self.group, self.grad_scale = rank, group, grad_scale
        self.precision = precision or CommsPrecision()
        self.world = layout.world_size
        slots = layout.slots()
        routed = [s for s in slots if s.routed]
        self.slot_features = [s.feature for s in routed]  # routed slots in slot order
        self.slot_ranks = [s.rank for s in routed]
        self.dims = [layout.feature_dims[s.feature] for s in routed]
        self.features = sorted(set(self.slot_features))  # routed features, in the collection's order
        self.means = [next(t.pooling == Pooling.mean for t in layout.tables if layout.feature_names[f]
                           in t.feature_names) for f in self.features]
        self.columns = [c for f in self.features
                        for c in range(layout.feature_start[f], layout.feature_start[f] + layout.feature_dims[f])]
        self.runs = column_runs(self.columns)
        own = [s for s in slots if s.rank == rank]
        self.own_slots = len(own)  # this rank's slots (all kinds), as the input dist counts them
        # this rank's routed slots: (position among its slots, feature name, dim)
        self.own_routed = [(k, layout.feature_names[s.feature], layout.feature_dims[s.feature])
                           for k, s in enumerate(own) if s.routed]

    def __call__(self, wide: torch.Tensor, rows: dict[str, torch.Tensor], counts: list[int], sent: RoutedIds,
                 lengths: torch.Tensor) -> torch.Tensor:
        """Return the routed shards' rows to their samples' ranks, pool them, and place them in the output.

        Collective: every rank calls it (a rank without routed shards sends nothing, and receives).

        Args:
            wide: ``[B, sum of dims]`` the pooled output dist's result (the routed features' columns are zeros).
            rows: this rank's routed lookups by feature, ``[ids received, dim]`` each, in the order the input
                dist gave them (by source rank, then sample).
            counts: the input dist's ids per ``(source rank, slot of this rank)`` (``PendingInput.counts``).
            sent: what this rank sent to routed slots (``PendingInput.routed``).
            lengths: the rank's bag sizes ``[features * B]``, in the collection's feature order.

        Returns:
            ``wide`` with the routed features' pooled rows in their columns.
        """
        batch = wide.shape[0]
        own = self.own_slots
        chunks = {name: rows[name].split([counts[s * own + k] for s in range(self.world)])
                  for k, name, _ in self.own_routed}
        send = [chunks[name][s].reshape(-1) for s in range(self.world) for _, name, _ in self.own_routed]
        send_splits = [sum(counts[s * own + k] * dim for k, _, dim in self.own_routed) for s in range(self.world)]
        recv_splits = [0] * self.world
        for rank, count, dim in zip(self.slot_ranks, sent.counts, self.dims, strict=True):
            recv_splits[rank] += count * dim
        flat = torch.cat(send) if send else wide.new_zeros(0)
        wide, recv = RowsAllToAll.apply(wide, flat, send_splits, recv_splits, self.group, self.grad_scale,
                                        self.precision)
        blocks = [b.view(-1, dim) for b, dim in zip(recv.split([c * d for c, d in zip(sent.counts, self.dims,
                                                                                       strict=True)]),
                                                     self.dims, strict=True)]
        # one row per distinct id came back: one per id of the batch (autograd sums the repeats' gradients)
        blocks = [b.index_select(0, i) for b, i in zip(blocks, sent.inverse.split(sent.ids), strict=True)]
        return splice_columns(wide, self.pool(blocks, sent.samples, sent.weights, lengths, batch), self.runs)

    def pool(self, blocks: list[torch.Tensor], samples: torch.Tensor, weights: torch.Tensor | None,
             lengths: torch.Tensor, batch: int) -> torch.Tensor:
        """Pool the rows of every routed feature into its ``B`` bags: ``[B, sum of the routed features' dims]``.

        Args:
            blocks: ``[ids, dim]`` rows of each routed slot (slot order), in send order.
            samples: the sample of every row (all blocks, in order).
            weights: the per-id weight of every row, or None.
            lengths: the rank's bag sizes ``[features * B]``, in the collection's feature order.
            batch: the local batch size ``B``.
        """
        sizes = [b.shape[0] for b in blocks]
        samples_by_slot = samples.split(sizes)
        weights_by_slot = weights.split(sizes) if weights is not None else [None] * len(blocks)
        out = []
        for feature, mean in zip(self.features, self.means, strict=True):
            mine = [k for k, f in enumerate(self.slot_features) if f == feature]
            rows = torch.cat([blocks[k] for k in mine])
            if weights is not None:
                rows = rows * torch.cat([weights_by_slot[k] for k in mine]).unsqueeze(1)
            where = torch.cat([samples_by_slot[k] for k in mine])
            bags = rows.new_zeros(batch, rows.shape[1]).index_add(0, where, rows)
            if mean:
                bags = bags / lengths[feature * batch:(feature + 1) * batch].clamp(min=1).unsqueeze(1).to(bags.dtype)
            out.append(bags)
        return torch.cat(out, dim=1)


def column_runs(columns: list[int]) -> list[tuple[int, int]]:
    """``(first column, width)`` of each run of consecutive ``columns`` (ascending), in order.

    Example:
        >>> column_runs([2, 3, 4, 8, 9])
        [(2, 3), (8, 2)]
    """
    runs: list[tuple[int, int]] = []
    for c in columns:
        if runs and runs[-1][0] + runs[-1][1] == c:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((c, 1))
    return runs


def splice_columns(wide: torch.Tensor, pooled: torch.Tensor, runs: list[tuple[int, int]]) -> torch.Tensor:
    """``wide`` with its columns of ``runs`` replaced by ``pooled``'s columns, in order: one ``cat`` of column slices
    (an ``index_copy`` along dim 1 gathers element by element on the CPU, forward and backward: ``dlrm`` routed on
    2 CPU processes ran 244 ms a step with it, 199 ms with this).

    Args:
        wide: ``[B, W]``.
        pooled: ``[B, sum of the runs' widths]``.
        runs: ``column_runs`` of the replaced columns.

    Example:
        >>> splice_columns(torch.zeros(1, 5), torch.tensor([[1.0, 2.0, 3.0]]), [(1, 2), (4, 1)]).tolist()
        [[0.0, 1.0, 2.0, 0.0, 3.0]]
    """
    pieces, at, taken = [], 0, 0
    for start, width in runs:
        if start > at:
            pieces.append(wide[:, at:start])
        pieces.append(pooled[:, taken:taken + width])
        at, taken = start + width, taken + width
    if at < wide.shape[1]:
        pieces.append(wide[:, at:])
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)

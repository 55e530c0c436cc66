"""ReplicaSync: data_parallel tables trained as TorchRec trains them, with one all-reduce of their gradients a step.

Every rank holds a full replica of each data_parallel table (its local collections of
``replicated`` groups, ``layout.ShardLayout``). Per step:

- forward: each rank looks up only its own ``B`` samples' ids in its replica (no ids in the input
  all-to-all, no pooled rows in the output all-to-all: the output is local). The kernels' own
  fused backward is not armed (the lookup runs under no_grad inside ``_Capture``);
- backward: each rank forms its local gradient of the replicas' rows, a dense ``[rows, dim]``
  buffer per kernel group (data_parallel is for small tables), plus a per-row lookup count; one
  ``torch.distributed.all_reduce`` sums buffers and counts over the ranks (one flat buffer for all
  the rank's replicated kernel groups); then every replica applies the same fused sparse update
  to the rows that the global batch touched (count > 0) with the summed gradient, through the
  kernel itself (``apply_rows``: one lookup per touched row and the kernel's fused backward), so
  whichever backend (torch, triton, fbgemm) and optimizer the group has, the update is the code
  an unsharded table runs, on the same rows with the same summed gradient. Replicas stay
  bit-identical, and the result equals the unsharded table trained on the global batch up to
  the order of the float sums (lazy optimizers such as Adam update exactly the rows that the
  unsharded table would: the touched ones).

Gradient scaling: the gradients reaching the replicas are already multiplied by the output
dist's ``grad_scale`` (``1 / world`` with ``gradient_division``), so the all-reduced sum is the
gradient of the global batch's mean loss, as for the other sharding types.

The order of collectives: the all-reduce runs in the backward of ``_Gate``, an autograd node that
every ``_Capture`` of the step hangs from, so it runs once, after every replicated group's
local gradient is formed, at the same point of the backward on every rank (every rank has the
same graph; a forward without grad or with ``B = 0`` on every rank makes no gate).

Step counts: one optimizer step per forward and backward, as the unsharded table counts (fbgemm
counts in forward, the others in backward: ``reduce_and_update`` sets it), gradient accumulation's
several forwards before one backward included.

Host reads a step: each kernel group's number of touched rows (the update's size); a group whose
tables differ in dim (fbgemm) also reads where each feature's ids start, in backward and in the update.

Example:
    >>> sync = ReplicaSync(replicated_collections, group=None, device=torch.device("cpu"))  # doctest: +SKIP
    >>> sync.begin()  # before the replicated collections' forward, each step  # doctest: +SKIP
    >>> out = [ebc(kjt).values() for ebc in replicated_collections]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from recframe.embedding.collection import EmbeddingBagCollection
from recframe.embedding.kernels import GroupSpec


@dataclass
class _Group:
    """One replicated kernel group: its kernel and where its tables' gradients and counts sit in the flat buffer.

    A group's tables may differ in dim (fbgemm groups do): each has its own ``[rows, dim]`` block.
    """

    kernel: nn.Module
    spec: GroupSpec
    starts: list[int]  # [tables + 1] first row of each table in the group's stack
    dims: list[int]  # each table's dim
    grad_at: list[int]  # first element of each table's ``[rows, dim]`` gradient in the flat buffer
    count_at: int  # first element of the group's ``[rows]`` lookup counts (stack order)
    columns: list[int]  # [features + 1] first output column of each feature
    carrier: list[int]  # the first feature of each table (the update's lookups go through it)
    # One dim for all its tables (torch and triton groups always): the vectorized path, without host reads.
    # Device copies of the stack's table starts, each feature's first row and each table's carrier.
    uniform: bool = False
    starts_t: torch.Tensor | None = None
    feature_row_start: torch.Tensor | None = None
    carrier_t: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.starts[-1]

    def stacked_grad(self, flat: torch.Tensor) -> torch.Tensor:
        """The whole stack's ``[rows, dim]`` gradient (one dim only: the tables' blocks are consecutive)."""
        dim = self.dims[0]
        return flat[self.grad_at[0]:self.grad_at[0] + self.rows * dim].view(self.rows, dim)

    def grad(self, flat: torch.Tensor, table: int) -> torch.Tensor:
        """Table ``table``'s ``[rows, dim]`` gradient block of ``flat``."""
        rows, dim = self.starts[table + 1] - self.starts[table], self.dims[table]
        return flat[self.grad_at[table]:self.grad_at[table] + rows * dim].view(rows, dim)


@dataclass
class _Step:
    """One forward's captured lookups: the flat buffer of local gradients and counts, and by how much each
    kernel's forward advanced its step count (fbgemm counts its optimizer step in forward, the others in backward)."""

    flat: torch.Tensor
    forward_steps: dict[int, int] = field(default_factory=dict)


def replica_groups(collections: list[EmbeddingBagCollection], device: torch.device) -> tuple[list[_Group], int]:
    """The kernel groups of ``collections`` with their places in one flat buffer, and its size."""
    groups, at = [], 0
    for ebc in collections:
        for kernel in ebc.kernels:
            spec = kernel.spec
            starts, dims, grad_at = [0], [], []
            for table in spec.tables:
                starts.append(starts[-1] + table.num_embeddings)
                dims.append(table.embedding_dim)
                grad_at.append(at)
                at += table.num_embeddings * table.embedding_dim
            columns = [0]
            for t in spec.feature_tables:
                columns.append(columns[-1] + dims[t])
            carrier = [spec.feature_tables.index(t) for t in range(len(spec.tables))]
            group = _Group(kernel, spec, starts, dims, grad_at, at, columns, carrier)
            if len(set(dims)) == 1:
                group.uniform = True
                group.starts_t = torch.tensor(starts, dtype=torch.int64, device=device)
                group.feature_row_start = torch.tensor([starts[t] for t in spec.feature_tables], dtype=torch.int64,
                                                       device=device)
                group.carrier_t = torch.tensor(carrier, dtype=torch.int64, device=device)
            groups.append(group)
            at += starts[-1]
    return groups, at


class ReplicaSync:
    """The data_parallel runtime of one sharded collection (see the module docstring).

    Installs itself as the ``lookup_hook`` of the replicated local collections.

    Args:
        collections: this rank's local collections of replicated (data_parallel) tables.
        group: the process group (None = the default group).
        device: where the replicas live.
    """

    def __init__(self, collections: list[EmbeddingBagCollection], group: dist.ProcessGroup | None,
                 device: torch.device) -> None:
        self.group, self.device = group, device
        self.groups, self.size = replica_groups(collections, device)
        first = 0
        for ebc in collections:
            ebc.lookup_hook = _Hook(self, first)
            first += len(ebc.kernels)
        self._step: _Step | None = None
        self._gate: torch.Tensor | None = None

    def begin(self) -> None:
        """Start a forward of the replicated collections (with grad: a fresh gate and buffer for its backward)."""
        if torch.is_grad_enabled() and self.groups:
            self._step = _Step(torch.zeros(self.size, device=self.device))
            anchor = torch.empty(0, device=self.device, requires_grad=True)
            self._gate = _Gate.apply(anchor, self, self._step)
        else:
            self._step = self._gate = None

    def lookup(self, index: int, indices: torch.Tensor, offsets: torch.Tensor,
               weights: torch.Tensor | None) -> torch.Tensor:
        """Group ``index``'s pooled lookup of the rank's own batch, its local gradient captured in backward."""
        group = self.groups[index]
        if self._gate is None:
            with torch.no_grad():
                return group.kernel(indices, offsets, weights)
        assert self._step is not None
        before = group.kernel.get_step()
        out = _Capture.apply(self._gate, self, self._step, index, indices, offsets, weights)
        self._step.forward_steps[index] = group.kernel.get_step() - before
        return out

    def local_gradient(self, step: _Step, index: int, indices: torch.Tensor, offsets: torch.Tensor,
                       weights: torch.Tensor | None, grad_out: torch.Tensor) -> None:
        """Add group ``index``'s gradient of every lookup (and a count of 1) to its rows of ``step.flat``."""
        g = self.groups[index]
        features = len(g.spec.feature_tables)
        batch = (offsets.numel() - 1) // features
        if indices.numel() == 0 or batch == 0:
            return
        if g.uniform:
            _stacked_local_gradient(g, step.flat, features, batch, indices, offsets, weights, grad_out)
            return
        bounds = offsets[::batch].tolist()  # each feature's ids (one host read)
        grad_out = grad_out.float()
        counts = step.flat[g.count_at:g.count_at + g.rows]
        for f, table in enumerate(g.spec.feature_tables):
            lo, hi = bounds[f], bounds[f + 1]
            if hi == lo:
                continue
            ids = indices[lo:hi]
            sample = torch.arange(batch, device=ids.device).repeat_interleave(
                offsets[f * batch:(f + 1) * batch + 1].diff(), output_size=hi - lo)
            grad_ids = grad_out[:, g.columns[f]:g.columns[f + 1]].index_select(0, sample)
            if weights is not None:
                grad_ids.mul_(weights[lo:hi].float().unsqueeze(1))
            g.grad(step.flat, table).index_add_(0, ids, grad_ids)
            counts.index_add_(0, ids + g.starts[table], torch.ones(hi - lo, device=ids.device))

    def reduce_and_update(self, step: _Step) -> None:
        """Sum the local gradients and counts over the ranks (one all-reduce), then update every replica."""
        dist.all_reduce(step.flat, group=self.group)
        for index, g in enumerate(self.groups):
            # One optimizer step per forward and backward, as the unsharded table counts: the step now, less what
            # this forward's lookup counted, plus one (whatever the update's own lookup counts; gradient
            # accumulation's several forwards before one backward included).
            target = g.kernel.get_step() - step.forward_steps.get(index, 0) + 1
            rows = step.flat[g.count_at:g.count_at + g.rows].nonzero().squeeze(1)  # the host read of the step
            if rows.numel():
                apply_rows(g, rows, step.flat)
            g.kernel.set_step(target)


def apply_rows(g: _Group, rows: torch.Tensor, flat: torch.Tensor) -> None:
    """The group's fused update of ``rows`` (sorted, distinct rows of its stack) with their summed gradients.

    Through the kernel itself: one bag a row, holding only that row, in its table's first feature;
    the kernel's backward of that lookup, given the row's summed gradient as the bag's, sums one
    gradient per row (itself) and applies the optimizer, exactly as it does for an unsharded
    table's touched rows.

    Args:
        g: the group.
        rows: the touched rows, sorted.
        flat: the all-reduced buffer (``g.grad`` reads each table's block).
    """
    n, features, device = rows.numel(), len(g.spec.feature_tables), rows.device
    if g.uniform:  # vectorized: each row's table and carrier from the device copies
        assert g.starts_t is not None and g.carrier_t is not None
        table = torch.searchsorted(g.starts_t[1:], rows, right=True)
        carrier = g.carrier_t.index_select(0, table)
        lengths = torch.zeros(features, n, dtype=torch.int64, device=device)
        lengths[carrier, torch.arange(n, device=device)] = 1
        grad_out = torch.zeros(n, features, g.dims[0], device=device)
        grad_out[torch.arange(n, device=device), carrier] = g.stacked_grad(flat).index_select(0, rows)
        offsets = torch.cat([lengths.new_zeros(1), lengths.view(-1).cumsum(0)])
        with torch.enable_grad():  # feature-major ids are the rows in order (see below)
            out = g.kernel(rows - g.starts_t.index_select(0, table), offsets, None)
            torch.autograd.backward(out, grad_out.view(n, features * g.dims[0]))
        return
    cuts = torch.searchsorted(rows, torch.tensor(g.starts, device=device)).tolist()  # each table's touched rows
    lengths = torch.zeros(features, n, dtype=torch.int64, device=device)
    grad_out = torch.zeros(n, g.columns[-1], device=device)
    for table, (lo, hi) in enumerate(zip(cuts, cuts[1:], strict=False)):
        if hi == lo:
            continue
        f = g.carrier[table]
        lengths[f, lo:hi] = 1
        local = rows[lo:hi] - g.starts[table]
        grad_out[lo:hi, g.columns[f]:g.columns[f + 1]] = g.grad(flat, table).index_select(0, local)
    offsets = torch.cat([lengths.new_zeros(1), lengths.view(-1).cumsum(0)])
    # Feature-major ids: the carriers grow with the table (a table's features are consecutive), so the rows
    # of feature f's bags are the rows of its tables, in row order.
    indices = rows - torch.tensor(g.starts[:-1], device=device).repeat_interleave(
        torch.tensor(cuts, device=device).diff(), output_size=n)
    with torch.enable_grad():
        out = g.kernel(indices, offsets, None)
        torch.autograd.backward(out, grad_out)


def _stacked_local_gradient(g: _Group, flat: torch.Tensor, features: int, batch: int, indices: torch.Tensor,
                            offsets: torch.Tensor, weights: torch.Tensor | None, grad_out: torch.Tensor) -> None:
    """``ReplicaSync.local_gradient`` of a one-dim group, vectorized over its features (no host read)."""
    assert g.feature_row_start is not None
    n, dim = indices.numel(), g.dims[0]
    rows = indices + g.feature_row_start.repeat_interleave(offsets[::batch].diff(), output_size=n)
    bag = torch.arange(features * batch, device=indices.device).repeat_interleave(offsets.diff(), output_size=n)
    source = (bag % batch) * features + torch.div(bag, batch, rounding_mode="floor")  # bags are feature-major
    grad_ids = grad_out.float().reshape(batch * features, dim).index_select(0, source)
    if weights is not None:
        grad_ids.mul_(weights.float().unsqueeze(1))
    g.stacked_grad(flat).index_add_(0, rows, grad_ids)
    flat[g.count_at:g.count_at + g.rows].index_add_(0, rows, torch.ones(n, device=rows.device))


class _Hook:
    """An EmbeddingBagCollection's ``lookup_hook``: its group ``g`` is the sync's group ``first + g``."""

    def __init__(self, sync: ReplicaSync, first: int) -> None:
        self.sync, self.first = sync, first

    def __call__(self, group: int, indices: torch.Tensor, offsets: torch.Tensor,
                 weights: torch.Tensor | None) -> torch.Tensor:
        return self.sync.lookup(self.first + group, indices, offsets, weights)


class _Gate(torch.autograd.Function):
    """Forward: an empty tensor that every capture of the step takes. Backward (after all of them): the
    all-reduce and the updates."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, sync: ReplicaSync, step: _Step) -> torch.Tensor:  # noqa: ANN001
        ctx.sync, ctx.step = sync, step
        return anchor.new_empty(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, None]:  # noqa: ANN001
        step, ctx.step = ctx.step, None
        ctx.sync.reduce_and_update(step)
        return None, None, None


class _Capture(torch.autograd.Function):
    """Forward: the kernel's lookup with its fused backward disarmed (Functions run their forward without grad).
    Backward: the local gradient of the group's rows, into the step's buffer."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, sync: ReplicaSync, step: _Step, index: int,  # noqa: ANN001
                indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        ctx.sync, ctx.step, ctx.index = sync, step, index
        ctx.save_for_backward(indices, offsets, weights)
        return sync.groups[index].kernel(indices, offsets, weights)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN001, ANN205
        indices, offsets, weights = ctx.saved_tensors
        ctx.sync.local_gradient(ctx.step, ctx.index, indices, offsets, weights, grad_out)
        return torch.zeros(0, device=grad_out.device), None, None, None, None, None, None

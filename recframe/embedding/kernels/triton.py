"""The triton kernel: our own table-batched lookup and fused backward + optimizer, for GPUs without fbgemm.

A group's tables (one dim, one weight dtype) live in one ``[total_rows, dim]`` tensor, as in the
torch backend. Forward is one Triton launch for all features of the group (pooled: weighted sums
per bag, the caller folds mean pooling into the weights; sequence: one row per id). Backward
sorts the lookups by row once (``torch.sort``, stable), then two Triton launches sum every row's
gradients and apply the optimizer to the row in the same kernel: one update per touched row,
in a fixed order, no atomics, so every run gives the same result (kernel design:
``triton_kernels.py``). There are no host syncs in a step, but for one per shape when its graph
is captured: a batch shape that repeats (the same number of lookups every step, as with one id
per feature) gets its backward captured in a CUDA graph and replayed, one launch instead of ~10,
the same result (``triton_graphs.py``).

Support: optimizers ``sgd``, ``adagrad``, ``rowwise_adagrad``, ``adam``, ``rowwise_adam`` and ``lamb``
(with the weight decay of ``recframe.embedding.optimizers``); weights ``fp32``, ``fp16``, ``bf16``
with fp32 optimizer state and fp32 accumulation, rounded to nearest even when stored; pooled outputs
in fp32, bf16 or fp16 (``output_dtype``: the fp32 sums rounded once; the backward loads the output
gradient in that dtype and sums it in fp32, so a 16-bit output costs no cast kernels); any dim
(one kernel per dim); fewer than 2^31 lookups in one batch (positions are int32 in the kernels).
Devices: CUDA; CPU only through Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is
first imported, which ``import pytorch_lightning`` already does: slow, for tests; ``auto`` never
picks triton on CPU). Needs the ``triton`` package (3.6 or later): where it does not
import, the backend says so and ``auto`` uses torch.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer, TableConfig
    >>> from recframe.embedding.kernels import GroupSpec
    >>> spec = GroupSpec(tables=[TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])],
    ...                  feature_tables=[0], optimizer=SparseOptimizer(name="adagrad", lr=0.1), pooled=True,
    ...                  device=torch.device("cuda"))
    >>> kernel = TritonEmbeddingKernel(spec)  # doctest: +SKIP
    >>> kernel(torch.tensor([1, 1], device="cuda"), torch.tensor([0, 2], device="cuda"), None).shape  # doctest: +SKIP
    torch.Size([1, 4])
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

import torch

from recframe.embedding.config import SparseOptimizer, TableConfig
from recframe.embedding.kernels import GroupSpec
from recframe.embedding.kernels.stacked import StackedTables
from recframe.embedding.kernels.triton_graphs import BackwardGraphs, Claim, Entry, graphs_allowed
from recframe.embedding.optimizers import USES_STEP

log = logging.getLogger(__name__)

BLOCK_BAGS = 32  # bags (pooled) or ids (sequence) per forward program
FORWARD_WARPS = 4  # warps per forward program
BLOCK_LOOKUPS = 16  # sorted lookups per backward program (16 beat 32 and 64 on an H100)
BACKWARD_WARPS = 4  # warps per backward program
PARTIALS = 16  # partial sums a backward program adds per loop iteration (long segments)
# (triton itself is imported lazily, by _kernels_or_error: this module imports where triton is missing)


@functools.cache
def _kernels_or_error() -> ModuleType | str:
    """The compiled kernel module, or why it cannot be used (logged once, never raised)."""
    try:
        from recframe.embedding.kernels import triton_kernels
    except Exception as err:  # a missing or broken triton must not crash recframe
        log.warning("triton is not usable (%s: %s); the triton embedding backend is unavailable",
                    type(err).__name__, err)
        return f"triton does not import ({type(err).__name__}: {err}); install it with pip install triton"
    return triton_kernels


def _kernels() -> ModuleType:
    """The kernel module (only called once a kernel was built, i.e. triton imported)."""
    kernels = _kernels_or_error()
    assert not isinstance(kernels, str), kernels
    return kernels


def unsupported(table: TableConfig, optimizer: SparseOptimizer, device: torch.device) -> str | None:
    """Why the triton backend cannot run this table here, or None when it can.

    Args:
        table: the table.
        optimizer: the table's optimizer.
        device: where it would live.
    """
    kernels = _kernels_or_error()
    if isinstance(kernels, str):
        return kernels
    if device.type == "meta":  # a description to be sharded: the kernels run where the shards are built
        return None
    if device.type == "cuda":
        if kernels.INTERPRETED:
            return "the triton kernels were imported with TRITON_INTERPRET=1 (CPU interpreter); unset it for CUDA"
        return None
    if device.type == "cpu":
        if not kernels.INTERPRETED:
            return ("triton runs on CUDA; on CPU only through its interpreter (TRITON_INTERPRET=1 set before "
                    "triton is first imported; for tests: it is slow)")
        return None
    return f"triton runs on cuda (or cpu through TRITON_INTERPRET=1) and meta, not {device.type}"


class TritonEmbeddingKernel(StackedTables):
    """One group of same-dim tables in one tensor, looked up and trained by Triton kernels (module docstring).

    Args:
        spec: the group (tables, features, optimizer, pooled or sequence, device).
    """

    def __init__(self, spec: GroupSpec) -> None:
        reason = unsupported(spec.tables[0], spec.optimizer, spec.device)
        if reason is not None:
            raise ValueError(f"triton embedding backend: {reason}")
        super().__init__(spec, "triton")
        self.block_dim = 1 << (self.dim - 1).bit_length()  # the power of two >= dim
        # Keys are rows of the stacked tables; int32 where they fit: half the bits for the radix sort to pass over.
        self.key_dtype = torch.int32 if self.table_starts[-1] < 2**31 else torch.int64
        # The autograd input that makes backward run (no gradient flows into it); one per kernel.
        self._anchor = torch.empty(0, device=spec.device, requires_grad=True)
        self.graphs = BackwardGraphs(enabled=spec.device.type == "cuda" and not _kernels().INTERPRETED
                                     and spec.optimizer.name not in USES_STEP and graphs_allowed())

    # ---- the EmbeddingKernel interface --------------------------------------------------------
    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, per_sample_weights: torch.Tensor | None,
                output_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Look up the group's features (see ``recframe.embedding.kernels``).

        Args:
            indices: int64 ids, feature-major, each in its table's range.
            offsets: int64 ``[num_features * batch + 1]`` bag boundaries.
            per_sample_weights: float per-id weights (pooled kernels only) or None.
            output_dtype: the pooled output's dtype (fp32, bf16 or fp16): the fp32 sums are stored rounded to
                nearest even, and the backward reads the gradient in that dtype (sequence kernels: fp32 only).

        Returns:
            ``[batch, num_features * dim]`` in ``output_dtype`` (pooled) or ``[num_ids, dim]`` fp32 (sequence).
        """
        weights = None
        if per_sample_weights is not None and self.spec.pooled:
            weights = per_sample_weights.float().contiguous()
            if weights.data_ptr() % 16:  # a slice of the batch's weights: aligned, a graph can read it by address
                weights = weights.clone()
        if self.spec.pooled and output_dtype not in _kernels().TL_DTYPES:
            raise ValueError(f"triton backend: pooled output dtype {output_dtype} is not one of "
                             f"{list(_kernels().TL_DTYPES)}")
        dtype = output_dtype if self.spec.pooled else torch.float32
        out = _FusedLookup.apply(self._anchor, self, indices.contiguous(), offsets.contiguous(), weights, dtype)
        return out if out.dtype == output_dtype else out.to(output_dtype)

    # ---- internals ----------------------------------------------------------------------------
    def lookup(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None,
               training: bool, output_dtype: torch.dtype = torch.float32,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Claim | None]:
        """The forward launch: ``(output, keys, grad rows, claim)`` (grad rows: pooled only; see ``triton_kernels``).

        ``training``: a backward will follow, so a repeated shape writes keys and grad rows into its graph's
        buffers (``claim`` is then not None). ``output_dtype``: the pooled output's (and so its gradient's) dtype;
        graphs are kept per gradient dtype.
        """
        k = _kernels()
        num_ids, num_bags = indices.numel(), offsets.numel() - 1
        if max(num_ids, num_bags) >= 2**31:  # the kernels index lookups and bags with int32
            raise ValueError(f"triton backend: at most 2^31 - 1 ids and bags a batch, got {num_ids:,} ids and "
                             f"{num_bags:,} bags; lower data.batch_size or use tables.backend=torch")
        batch = num_bags // self.num_features
        device = indices.device
        claim = None
        if training and self.graphs.enabled:  # (the fingerprint costs a few data_ptr calls: only when it is used)
            claim = self.graphs.claim(num_ids, weights is not None, self._fingerprint(), self._new_entry,
                                      output_dtype)
        if claim is not None:
            keys, grad_rows = claim.entry.keys, claim.entry.grad_rows
        else:
            keys = torch.empty(num_ids, dtype=self.key_dtype, device=device)
            grad_rows = torch.empty(num_ids, dtype=torch.int32, device=device) if self.spec.pooled else None
        if not self.spec.pooled:
            out = torch.empty(num_ids, self.dim, device=device)
            if num_ids:
                k.sequence_forward[(-(-num_ids // BLOCK_BAGS),)](
                    indices, offsets, self.feature_row_start, self.weight, out, keys, num_ids, batch,
                    self.num_features, self.dim, BLOCK_B=BLOCK_BAGS, BLOCK_D=self.block_dim, num_warps=FORWARD_WARPS)
            return out, keys, None, claim
        out = torch.empty(batch, self.num_features * self.dim, device=device, dtype=output_dtype)
        k.pooled_forward[(-(-num_bags // BLOCK_BAGS),)](
            indices, offsets, indices if weights is None else weights, self.feature_row_start, self.weight, out,
            keys, grad_rows, num_bags, batch, self.num_features, self.dim,
            HAS_WEIGHTS=weights is not None, BLOCK_B=BLOCK_BAGS, BLOCK_D=self.block_dim, num_warps=FORWARD_WARPS)
        return out, keys, grad_rows, claim

    def apply_gradient(self, keys: torch.Tensor, grad_rows: torch.Tensor | None, weights: torch.Tensor | None,
                       grad_out: torch.Tensor, claim: Claim | None = None) -> None:
        """Sort the lookups by row, sum each row's gradients and apply the optimizer (replayed from a graph
        where the forward claimed one, else launched). ``grad_out`` in any of ``TL_DTYPES``, read as it is."""
        self.step += 1
        if keys.numel() == 0:
            return
        grad = grad_out.contiguous()  # a 16-bit gradient stays 16-bit: the kernels convert rows after loading
        if claim is not None:
            entry = claim.entry
            launch = functools.partial(self._update, entry.keys, entry.grad_rows,
                                       entry.weights_at if weights is not None else None, entry.grad_at, True,
                                       entry.grad_dtype)
            if self.graphs.run(claim, grad, weights, self._fingerprint(), launch):
                return
        self._update(keys, grad_rows, weights, grad, False, grad.dtype)

    def _fingerprint(self) -> tuple:
        """What a captured backward bakes in: the storage's addresses and the optimizer's settings."""
        opt = self.spec.optimizer
        return (self.weight.data_ptr(), *(getattr(self, name).data_ptr() for name in self.state_names),
                opt.lr, opt.eps, opt.weight_decay, opt.weight_decay_mode, tuple(opt.betas))

    def _new_entry(self, num_lookups: int, weighted: bool, grad_dtype: torch.dtype) -> Entry:
        """The static buffers of a shape's graph (``triton_graphs.Entry``)."""
        device = self.weight.device
        address = functools.partial(torch.zeros, 1, dtype=torch.int64, device=device)
        return Entry(keys=torch.empty(num_lookups, dtype=self.key_dtype, device=device),
                     grad_rows=torch.empty(num_lookups, dtype=torch.int32, device=device) if self.spec.pooled else None,
                     grad_at=address(), weights_at=address() if weighted else None, grad_dtype=grad_dtype)

    def _update(self, keys: torch.Tensor, grad_rows: torch.Tensor | None, weights: torch.Tensor | None,
                grad: torch.Tensor, indirect: bool, grad_dtype: torch.dtype) -> None:
        """The backward's launches: sort, partial sums of long segments, sums + optimizer per row.

        ``indirect``: ``weights`` and ``grad`` are int64 tensors holding the addresses (a graph's inputs);
        ``grad_dtype``: the output gradient's dtype (the kernels load it so and sum in fp32).
        """
        opt, k = self.spec.optimizer, _kernels()
        num_lookups = keys.numel()
        sorted_keys, order = torch.sort(keys, stable=True)
        num_blocks = -(-num_lookups // BLOCK_LOOKUPS)
        partials = torch.empty(num_blocks, self.dim, device=keys.device)
        pooled = self.spec.pooled
        dummy = order  # stands for the pointers a configuration does not read
        common = dict(POOLED=pooled, HAS_WEIGHTS=weights is not None, INDIRECT=indirect, BLOCK=BLOCK_LOOKUPS,
                      BLOCK_D=self.block_dim, GRAD_DTYPE=k.TL_DTYPES[grad_dtype], num_warps=BACKWARD_WARPS)
        sources = (sorted_keys, order, grad_rows if pooled else dummy, dummy if weights is None else weights, grad)
        k.segment_partials[(num_blocks,)](*sources, partials, num_lookups, self.dim, **common)
        decay = None if opt.weight_decay == 0 else opt.weight_decay_mode
        b1, b2 = opt.betas
        states = [getattr(self, name) for name in self.state_names] + [self.weight] * (2 - len(self.state_names))
        k.update_rows[(num_blocks,)](
            *sources, partials, self.weight, states[0], states[1], num_lookups, num_blocks, self.dim,
            opt.lr, opt.eps, opt.weight_decay, b1, b2, 1.0 - b1**self.step, 1.0 - b2**self.step,
            OPT=k.OPTIMIZER_CODES[opt.name], DECAY=k.DECAY_CODES[decay],
            PARTIALS=PARTIALS, **common)


class _FusedLookup(torch.autograd.Function):
    """Forward: the lookup. Backward: the fused optimizer step on the touched rows; no gradient flows out."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, kernel: TritonEmbeddingKernel, indices: torch.Tensor,  # noqa: ANN001
                offsets: torch.Tensor, weights: torch.Tensor | None, output_dtype: torch.dtype) -> torch.Tensor:
        training = ctx.needs_input_grad[0]
        out, keys, grad_rows, claim = kernel.lookup(indices, offsets, weights, training, output_dtype)
        ctx.kernel, ctx.claim = kernel, claim
        if training:
            ctx.save_for_backward(keys, grad_rows, weights)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[None, None, None, None, None, None]:  # noqa: ANN001
        keys, grad_rows, weights = ctx.saved_tensors
        ctx.kernel.apply_gradient(keys, grad_rows, weights, grad_out, ctx.claim)
        return None, None, None, None, None, None

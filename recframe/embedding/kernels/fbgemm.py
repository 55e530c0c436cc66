"""The fbgemm kernel: fbgemm_gpu's table-batched embedding (TBE) with the optimizer fused into backward.

``fbgemm_gpu`` is imported lazily, on the first table that asks for it; a missing or broken
build is reported once (``fbgemm_import_error``) and never raised at import. Support, measured
with fbgemm-gpu-cpu 1.8 (and from fbgemm's sources for CUDA):

- CPU: ``sgd``, ``adagrad``, ``rowwise_adagrad`` (fbgemm's EXACT_* kernels); fp32 and fp16 weights;
  no weight decay (the CPU rowwise_adagrad kernel of 1.8 ignores it: measured).
- CUDA: additionally ``adam``, ``rowwise_adam`` (PARTIAL_ROWWISE_ADAM) and ``lamb``. Not tested
  here: the lent GPU machine has no fbgemm, so GPUs run the torch backend.
- ``embedding_dim`` must be a multiple of 4; no bf16 weights (fbgemm's CPU kernel lacks them).

CPU concurrency: fbgemm's CPU backward runs its SIMD, multi-threaded path only for fp32
``rowwise_adagrad`` tables that serve one feature each; every other CPU update (``sgd``, exact
``adagrad``, fp16, shared tables) is a single-threaded loop over the tables. For a pooled CPU group
of that kind the kernel calls fbgemm's CPU backward op itself, once per part of the group's
features (contiguous ranges over disjoint tables, up to ``torch.get_num_threads()`` of them), on
one thread each (the op releases the GIL). A part's call sees the whole output gradient and only
its own ids (the other features' bags are empty), so no tensor is copied, and each table is
updated by the same code on the same data as in one call: the result is bit-for-bit the same
(tested). On the 2-core development CPU this takes a Criteo-sized exact Adagrad step (26 tables,
dim 128, batch 2048) from ~68 ms to ~46 ms (``scripts/bench_embedding.py``).

fbgemm counts its optimizer step (``iter``) on every forward, the torch backend on every backward;
in a training loop (one backward per forward) they agree. Weight updates round to nearest
(``stochastic_rounding=False``) so that fp16 tables match the torch backend.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer, TableConfig
    >>> from recframe.embedding.kernels import GroupSpec
    >>> spec = GroupSpec(tables=[TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])],
    ...                  feature_tables=[0], optimizer=SparseOptimizer(name="rowwise_adagrad"), pooled=True,
    ...                  device=torch.device("cpu"))
    >>> FbgemmEmbeddingKernel(spec)(torch.tensor([1, 2]), torch.tensor([0, 2]), None).shape  # doctest: +SKIP
    torch.Size([1, 4])
"""

from __future__ import annotations

import functools
import logging
import threading

import torch
from torch import nn

from recframe.embedding.config import SparseOptimizer, TableConfig
from recframe.embedding.kernels import GroupSpec
from recframe.embedding.optimizers import STATE_LAYOUT
from recframe.vocab import OptimizerName, WeightDtype
from recframe.vocab import WeightDecayMode as Decay  # fbgemm has a WeightDecayMode too

log = logging.getLogger(__name__)

# recframe optimizer name -> fbgemm EmbOptimType member name.
OPTIM_TYPES = {
    OptimizerName.sgd: "EXACT_SGD",
    OptimizerName.adagrad: "EXACT_ADAGRAD",
    OptimizerName.rowwise_adagrad: "EXACT_ROWWISE_ADAGRAD",
    OptimizerName.adam: "ADAM",
    OptimizerName.rowwise_adam: "PARTIAL_ROWWISE_ADAM",
    OptimizerName.lamb: "LAMB",
}
CPU_OPTIMIZERS = (OptimizerName.sgd, OptimizerName.adagrad, OptimizerName.rowwise_adagrad)
WEIGHT_DTYPES = (WeightDtype.fp32, WeightDtype.fp16)


@functools.cache
def fbgemm_import_error() -> str | None:
    """None when fbgemm_gpu's TBE imports here, else why not (logged once, never raised)."""
    try:
        import fbgemm_gpu.split_table_batched_embeddings_ops_training  # noqa: F401
    except Exception as err:  # a missing or ABI-mismatched build must not crash recframe
        log.warning("fbgemm_gpu is not usable (%s: %s); embedding tables use the triton (CUDA) or torch backend",
                    type(err).__name__, err)
        return f"fbgemm_gpu does not import ({type(err).__name__}: {err})"
    return None


def unsupported(table: TableConfig, optimizer: SparseOptimizer, device: torch.device) -> str | None:
    """Why fbgemm cannot run this table here, or None when it can.

    Args:
        table: the table.
        optimizer: the table's optimizer.
        device: where it would live.
    """
    error = fbgemm_import_error()
    if error is not None:
        return error
    if device.type not in ("cpu", "cuda"):
        return f"fbgemm runs on cpu and cuda, not {device.type}"
    if device.type == "cpu" and optimizer.name not in CPU_OPTIMIZERS:
        return (f"fbgemm's fused CPU kernel supports only {[str(n) for n in CPU_OPTIMIZERS]}, "
                f"not '{optimizer.name}' (it is on CUDA)")
    if device.type == "cpu" and optimizer.weight_decay > 0:
        return ("fbgemm-gpu-cpu's CPU rowwise_adagrad ignores weight_decay (measured with 1.8: its updates "
                "equal the no-decay formula)")
    if table.weight_dtype not in WEIGHT_DTYPES:
        return f"fbgemm supports weight_dtype {[str(d) for d in WEIGHT_DTYPES]}, not '{table.weight_dtype}'"
    if table.embedding_dim % 4:
        return f"fbgemm needs embedding_dim to be a multiple of 4, got {table.embedding_dim}"
    return None


def concurrent_parts(spec: GroupSpec, threads: int) -> list[range]:
    """Contiguous feature ranges of a group whose TBEs may run their backward concurrently.

    One range (no split) unless the group is pooled, on CPU, more than one thread is available and
    fbgemm's update would be single-threaded (see the module docstring). Ranges never split a table:
    a cut goes only where the features before it and after it use disjoint tables; cuts are placed as
    close as possible to equal numbers of features.

    Args:
        spec: the group.
        threads: how many ranges at most (the CPU threads torch uses).

    Example:
        >>> import torch
        >>> from recframe.embedding.config import SparseOptimizer, TableConfig
        >>> tables = [TableConfig(name=f"t{i}", num_embeddings=10, embedding_dim=4, feature_names=[f"f{i}"])
        ...           for i in range(4)]
        >>> spec = GroupSpec(tables=tables, feature_tables=[0, 1, 2, 3], optimizer=SparseOptimizer(name="adagrad"),
        ...                  pooled=True, device=torch.device("cpu"))
        >>> concurrent_parts(spec, threads=2)
        [range(0, 2), range(2, 4)]
    """
    features = len(spec.feature_tables)
    shared = len(set(spec.feature_tables)) < features
    parallel_in_fbgemm = (spec.optimizer.name == OptimizerName.rowwise_adagrad
                          and spec.tables[0].weight_dtype == WeightDtype.fp32
                          and not shared)
    if spec.device.type != "cpu" or not spec.pooled or threads < 2 or features < 2 or parallel_in_fbgemm:
        return [range(features)]
    last_use = {table: f for f, table in enumerate(spec.feature_tables)}
    first_use: dict[int, int] = {}
    for f, table in enumerate(spec.feature_tables):
        first_use.setdefault(table, f)
    # A cut before feature k is valid when no table is used both before and from k on.
    valid = [k for k in range(1, features)
             if all(not (first_use[t] < k <= last_use[t]) for t in first_use)]
    cuts: list[int] = []
    for part in range(1, min(threads, features)):
        target = part * features / min(threads, features)
        candidates = [k for k in valid if k not in cuts and (not cuts or k > cuts[-1])]
        if candidates:
            cuts.append(min(candidates, key=lambda k: abs(k - target)))
    bounds = [0, *cuts, features]
    return [range(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


# The TBE's tensors (``<name>_dev``, ``_host``, ``_uvm``) that its splits view.
_SPLIT_STORAGE = {"weights": ("weights",), "states": ("momentum1", "momentum2", "prev_iter", "row_counter")}


class FbgemmEmbeddingKernel(nn.Module):
    """One group of tables in one fbgemm TBE (see the module docstring).

    The TBE is kept outside the module tree (its buffers are not this module's state: the
    collection exposes the tables under their names), so the kernel stays on the device it was
    built on; build the collection on its final device.

    Args:
        spec: the group (tables, features, optimizer, pooled or sequence, device).
        threads: the most parts whose CPU updates run concurrently (default: ``torch.get_num_threads()``).
    """

    def __init__(self, spec: GroupSpec, threads: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.state_names = [name for name, _ in STATE_LAYOUT[spec.optimizer.name]]
        self.feature_ranges = concurrent_parts(spec, torch.get_num_threads() if threads is None else threads)
        self._tbe = [_build_tbe(spec)]  # a list keeps it out of the module tree (see the class docstring)
        self._splits: dict[str, tuple[tuple[int, ...], list]] = {}  # "weights"/"states" -> (storage key, views)

    @property
    def tbe(self) -> nn.Module:
        """The wrapped fbgemm module."""
        return self._tbe[0]

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, per_sample_weights: torch.Tensor | None,
                output_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Look up the group's features (see ``recframe.embedding.kernels``).

        Args:
            indices: int64 ids, feature-major, each in its table's range.
            offsets: int64 ``[num_features * batch + 1]`` bag boundaries.
            per_sample_weights: float per-id weights (pooled kernels only) or None.
            output_dtype: the output's dtype: the TBE's fp32 output cast to it (the TBE's own
                ``output_dtype`` is fixed when it is built, and the choice here follows autocast per call).
        """
        weights = None if per_sample_weights is None else per_sample_weights.float()
        if len(self.feature_ranges) == 1 or not torch.is_grad_enabled():
            out = self.tbe(indices, offsets, per_sample_weights=weights)
        else:
            anchor = torch.empty(0, requires_grad=True)
            out = _ConcurrentUpdate.apply(anchor, self, indices, offsets, weights)
        return out if out.dtype == output_dtype else out.to(output_dtype)

    def part_inputs(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None,
                    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per part: its ids, the offsets with every other feature's bags empty, its weights (or empty)."""
        batch = (offsets.numel() - 1) // len(self.spec.feature_tables)
        bounds = offsets[[r.start * batch for r in self.feature_ranges] + [offsets.numel() - 1]].tolist()
        parts = []
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            part_weights = torch.empty(0) if weights is None else weights[lo:hi]
            parts.append((indices[lo:hi], offsets.clamp(lo, hi) - lo, part_weights))
        return parts

    def update(self, grad: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
               weights: torch.Tensor) -> None:
        """fbgemm's CPU backward with the fused update, for the ids given (see ``_ConcurrentUpdate``)."""
        from fbgemm_gpu.split_embedding_configs import SparseType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode

        tbe, opt = self.tbe, self.spec.optimizer
        common = (grad, tbe.weights_host, tbe.weights_placements, tbe.weights_offsets, tbe.D_offsets, tbe.max_D,
                  tbe.hash_size_cumsum, tbe.total_hash_size_bits, indices, offsets, PoolingMode.SUM.value, weights,
                  False)  # stochastic rounding off, as the TBE is built
        output = SparseType.FP32.as_int()
        if opt.name == OptimizerName.sgd:
            torch.ops.fbgemm.split_embedding_backward_codegen_sgd_cpu(*common, tbe.learning_rate_tensor, output)
            return
        momentum = (tbe.momentum1_host, tbe.momentum1_placements, tbe.momentum1_offsets, tbe.learning_rate_tensor)
        if opt.name == OptimizerName.adagrad:
            torch.ops.fbgemm.split_embedding_backward_codegen_adagrad_cpu(*common, *momentum, opt.eps, output)
        else:  # rowwise_adagrad: no weight decay on CPU (see unsupported), no max norm
            torch.ops.fbgemm.split_embedding_backward_codegen_rowwise_adagrad_cpu(
                *common, *momentum, opt.eps, 0.0, 0, 0.0, output)

    def table_weight(self, index: int) -> torch.Tensor:
        return self._split("weights")[index]

    def table_states(self, index: int) -> dict[str, torch.Tensor]:
        if not self.state_names:
            return {}
        states = self._split("states")[index]
        return dict(zip(self.state_names, states, strict=True))

    def _split(self, what: str) -> list:
        """The TBE's per-table views (``split_embedding_weights`` or ``split_optimizer_states``), made again only
        when its storage changed. Each split views every table and reads each one's offset from a tensor (~0.2 ms
        at 26 tables), and a collection's ``state_dict`` asks once per table: 5 ms at 26 tables, in every table
        health write and checkpoint. A cached view keeps its storage alive, so no new tensor takes its address."""
        tbe = self.tbe
        own = {**tbe._parameters, **tbe._buffers}  # plain dicts: a missing name costs no AttributeError
        tensors = [own.get(f"{name}_{where}") for name in _SPLIT_STORAGE[what] for where in ("dev", "host", "uvm")]
        key = (id(tbe), *((t.data_ptr(), t.numel()) for t in tensors if t is not None))
        if what not in self._splits or self._splits[what][0] != key:
            views = self.tbe.split_embedding_weights() if what == "weights" else self.tbe.split_optimizer_states()
            self._splits[what] = (key, views)
        return self._splits[what][1]

    def get_step(self) -> int:
        return int(self.tbe.iter.item())

    def set_step(self, step: int) -> None:
        self.tbe.iter.fill_(int(step))
        self.tbe.iter_cpu.fill_(int(step))

    @property
    def graph_safe(self) -> bool:
        """Not replayed from a caller's graph: fbgemm's module keeps host-side state per step (``iter_cpu``)."""
        return False


def _build_tbe(spec: GroupSpec) -> nn.Module:
    """fbgemm's SplitTableBatchedEmbeddingBagsCodegen for a group."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        BoundsCheckMode,
        EmbeddingLocation,
        PoolingMode,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
        WeightDecayMode,
    )

    opt = spec.optimizer
    on_cpu = spec.device.type == "cpu"
    location = EmbeddingLocation.HOST if on_cpu else EmbeddingLocation.DEVICE
    compute = ComputeDevice.CPU if on_cpu else ComputeDevice.CUDA
    decay_mode = WeightDecayMode.NONE
    if opt.name == OptimizerName.rowwise_adagrad and opt.weight_decay > 0:
        decay_mode = WeightDecayMode.L2 if opt.weight_decay_mode == Decay.l2 else WeightDecayMode.DECOUPLE
    precision = {WeightDtype.fp32: SparseType.FP32, WeightDtype.fp16: SparseType.FP16}[spec.tables[0].weight_dtype]
    return SplitTableBatchedEmbeddingBagsCodegen(
        [(t.num_embeddings, t.embedding_dim, location, compute) for t in spec.tables],
        feature_table_map=list(spec.feature_tables),
        optimizer=EmbOptimType[OPTIM_TYPES[opt.name]],
        learning_rate=opt.lr,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        weight_decay_mode=decay_mode,
        beta1=opt.betas[0],
        beta2=opt.betas[1],
        pooling_mode=PoolingMode.SUM if spec.pooled else PoolingMode.NONE,
        weights_precision=precision,
        output_dtype=SparseType.FP32,
        stochastic_rounding=False,
        # Always on: one cheap pass that also checks the offsets, so bad input is an error, never a crash.
        bounds_check_mode=BoundsCheckMode.FATAL,
        device=spec.device,
        table_names=[t.name for t in spec.tables],
    )


class _ConcurrentUpdate(torch.autograd.Function):
    """Forward: the TBE's lookup (no autograd of its own). Backward: fbgemm's CPU update, one thread per part.

    Every part's call gets the whole (contiguous) output gradient and only its own ids; the first
    error of any thread is raised on the calling thread.
    """

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, kernel: FbgemmEmbeddingKernel, indices: torch.Tensor,  # noqa: ANN001
                offsets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        ctx.kernel = kernel
        ctx.parts = kernel.part_inputs(indices, offsets, weights)
        return kernel.tbe(indices, offsets, per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, None, None, None]:  # noqa: ANN001
        grad = grad.contiguous()
        kernel, parts, ctx.parts = ctx.kernel, ctx.parts, None
        errors: list[BaseException] = []

        def run(part: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
            try:
                kernel.update(grad, *part)
            except BaseException as err:  # re-raised on the calling thread below
                errors.append(err)

        threads = [threading.Thread(target=run, args=(part,)) for part in parts[1:]]
        for thread in threads:
            thread.start()
        run(parts[0])
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return None, None, None, None, None

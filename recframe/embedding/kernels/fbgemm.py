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
``adagrad``, fp16, shared tables) is a single-threaded loop over the tables. A pooled CPU group of
that kind is therefore split into up to ``torch.get_num_threads()`` TBEs over disjoint tables
(contiguous feature ranges), whose backward passes run concurrently, one thread each. Each table's
update is the same code on the same data either way, so the result is bit-for-bit the same as one
TBE (tested); on the 2-core development CPU it takes a Criteo-sized exact Adagrad step from ~60 ms
to ~36 ms (``scripts/bench_embedding.py``).

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

log = logging.getLogger(__name__)

# recframe optimizer name -> fbgemm EmbOptimType member name.
OPTIM_TYPES = {
    "sgd": "EXACT_SGD",
    "adagrad": "EXACT_ADAGRAD",
    "rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD",
    "adam": "ADAM",
    "rowwise_adam": "PARTIAL_ROWWISE_ADAM",
    "lamb": "LAMB",
}
CPU_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")
WEIGHT_DTYPES = ("fp32", "fp16")


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
        return (f"fbgemm's fused CPU kernel supports only {list(CPU_OPTIMIZERS)}, "
                f"not {optimizer.name!r} (it is on CUDA)")
    if device.type == "cpu" and optimizer.weight_decay > 0:
        return ("fbgemm-gpu-cpu's CPU rowwise_adagrad ignores weight_decay (measured with 1.8: its updates "
                "equal the no-decay formula)")
    if table.weight_dtype not in WEIGHT_DTYPES:
        return f"fbgemm supports weight_dtype {list(WEIGHT_DTYPES)}, not {table.weight_dtype!r}"
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
    parallel_in_fbgemm = (spec.optimizer.name == "rowwise_adagrad" and spec.tables[0].weight_dtype == "fp32"
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


class FbgemmEmbeddingKernel(nn.Module):
    """One group of tables in fbgemm TBEs: one, or several over disjoint tables (see the module docstring).

    The TBEs are kept outside the module tree (their buffers are not this module's state: the
    collection exposes the tables under their names), so the kernel stays on the device it was
    built on; build the collection on its final device.

    Args:
        spec: the group (tables, features, optimizer, pooled or sequence, device).
        threads: the most TBEs to split a CPU group into (default: ``torch.get_num_threads()``).
    """

    def __init__(self, spec: GroupSpec, threads: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.state_names = [name for name, _ in STATE_LAYOUT[spec.optimizer.name]]
        self.feature_ranges = concurrent_parts(spec, torch.get_num_threads() if threads is None else threads)
        # table index in the group -> (part, its index in that part's TBE)
        self.table_location: dict[int, tuple[int, int]] = {}
        tbes = []
        for part, features in enumerate(self.feature_ranges):
            tables = sorted({spec.feature_tables[f] for f in features})
            for local, table in enumerate(tables):
                self.table_location[table] = (part, local)
            tbes.append(_build_tbe(spec, [spec.tables[t] for t in tables],
                                   [tables.index(spec.feature_tables[f]) for f in features]))
        self._tbes = tbes  # a list keeps them out of the module tree (see the class docstring)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor,
                per_sample_weights: torch.Tensor | None) -> torch.Tensor:
        """Look up the group's features (see ``recframe.embedding.kernels``).

        Args:
            indices: int64 ids, feature-major, each in its table's range.
            offsets: int64 ``[num_features * batch + 1]`` bag boundaries.
            per_sample_weights: float per-id weights (pooled kernels only) or None.
        """
        weights = None if per_sample_weights is None else per_sample_weights.float()
        if len(self._tbes) == 1:
            return self._tbes[0](indices, offsets, per_sample_weights=weights)
        batch = (offsets.numel() - 1) // len(self.spec.feature_tables)
        bounds = offsets[[r.start * batch for r in self.feature_ranges] + [offsets.numel() - 1]].tolist()
        inputs = []
        for part, features in enumerate(self.feature_ranges):
            lo, hi = bounds[part], bounds[part + 1]
            part_offsets = offsets[features.start * batch:features.stop * batch + 1] - lo
            inputs.append((indices[lo:hi], part_offsets, None if weights is None else weights[lo:hi]))
        if not torch.is_grad_enabled():
            pairs = zip(self._tbes, inputs, strict=True)
            return torch.cat([tbe(i, o, per_sample_weights=w) for tbe, (i, o, w) in pairs], dim=1)
        anchor = torch.empty(0, requires_grad=True)
        return _ConcurrentBackward.apply(anchor, self._tbes, inputs)

    def table_weight(self, index: int) -> torch.Tensor:
        part, local = self.table_location[index]
        return self._tbes[part].split_embedding_weights()[local]

    def table_states(self, index: int) -> dict[str, torch.Tensor]:
        if not self.state_names:
            return {}
        part, local = self.table_location[index]
        states = self._tbes[part].split_optimizer_states()[local]
        return dict(zip(self.state_names, states, strict=True))

    def get_step(self) -> int:
        return int(self._tbes[0].iter.item())

    def set_step(self, step: int) -> None:
        for tbe in self._tbes:
            tbe.iter.fill_(int(step))
            tbe.iter_cpu.fill_(int(step))


def _build_tbe(spec: GroupSpec, tables: list[TableConfig], feature_tables: list[int]) -> nn.Module:
    """fbgemm's SplitTableBatchedEmbeddingBagsCodegen for some tables of a group."""
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
    if opt.name == "rowwise_adagrad" and opt.weight_decay > 0:
        decay_mode = WeightDecayMode.L2 if opt.weight_decay_mode == "l2" else WeightDecayMode.DECOUPLE
    precision = {"fp32": SparseType.FP32, "fp16": SparseType.FP16}[tables[0].weight_dtype]
    return SplitTableBatchedEmbeddingBagsCodegen(
        [(t.num_embeddings, t.embedding_dim, location, compute) for t in tables],
        feature_table_map=feature_tables,
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
        table_names=[t.name for t in tables],
    )


class _ConcurrentBackward(torch.autograd.Function):
    """Forward: each TBE's pooled lookup, concatenated. Backward: the TBEs' backward passes, one thread each.

    Each TBE's output keeps its own autograd graph (built under ``enable_grad`` in forward); backward
    runs those graphs concurrently (fbgemm's ops release the GIL) and re-raises the first error.
    """

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, tbes: list[nn.Module],  # noqa: ANN001
                inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        with torch.enable_grad():
            outputs = [tbe(indices, offsets, per_sample_weights=weights)
                       for tbe, (indices, offsets, weights) in zip(tbes, inputs, strict=True)]
        ctx.outputs = outputs
        return torch.cat([out.detach() for out in outputs], dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, None]:  # noqa: ANN001
        outputs, ctx.outputs = ctx.outputs, None
        grads = grad.split([out.shape[1] for out in outputs], dim=1)
        errors: list[BaseException] = []

        def run(out: torch.Tensor, out_grad: torch.Tensor) -> None:
            try:
                out.backward(out_grad.contiguous())
            except BaseException as err:  # re-raised on the calling thread below
                errors.append(err)

        threads = [threading.Thread(target=run, args=pair) for pair in zip(outputs[1:], grads[1:], strict=True)]
        for thread in threads:
            thread.start()
        run(outputs[0], grads[0])
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return None, None, None

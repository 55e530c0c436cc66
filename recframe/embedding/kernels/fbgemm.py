"""The fbgemm kernel: fbgemm_gpu's table-batched embedding (TBE) with the optimizer fused into backward.

``fbgemm_gpu`` is imported lazily, on the first table that asks for it; a missing or broken
build is reported once (``fbgemm_import_error``) and never raised at import. Support, measured
with fbgemm-gpu-cpu 1.8 (and from fbgemm's sources for CUDA):

- CPU: ``sgd``, ``adagrad``, ``rowwise_adagrad`` (fbgemm's EXACT_* kernels); fp32 and fp16 weights;
  no weight decay (the CPU rowwise_adagrad kernel of 1.8 ignores it: measured).
- CUDA: additionally ``adam``, ``rowwise_adam`` (PARTIAL_ROWWISE_ADAM) and ``lamb``. Not tested
  here: the lent GPU machine has no fbgemm, so GPUs run the torch backend.
- ``embedding_dim`` must be a multiple of 4; no bf16 weights (fbgemm's CPU kernel lacks them).

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
        log.warning("fbgemm_gpu is not usable (%s: %s); embedding tables use the torch backend",
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


class FbgemmEmbeddingKernel(nn.Module):
    """One group of tables in one fbgemm TBE (see the module docstring).

    The TBE is kept outside the module tree (its buffers are not this module's state: the
    collection exposes the tables under their names), so the kernel stays on the device it was
    built on; build the collection on its final device.

    Args:
        spec: the group (tables, features, optimizer, pooled or sequence, device).
    """

    def __init__(self, spec: GroupSpec) -> None:
        super().__init__()
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
        precision = {"fp32": SparseType.FP32, "fp16": SparseType.FP16}[spec.tables[0].weight_dtype]
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
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
        self.spec = spec
        self.state_names = [name for name, _ in STATE_LAYOUT[opt.name]]
        self._tbe = [tbe]  # a list keeps it out of the module tree (see the class docstring)

    @property
    def tbe(self) -> nn.Module:
        """The wrapped fbgemm module."""
        return self._tbe[0]

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor,
                per_sample_weights: torch.Tensor | None) -> torch.Tensor:
        """Look up the group's features (see ``recframe.embedding.kernels``).

        Args:
            indices: int64 ids, feature-major, each in its table's range.
            offsets: int64 ``[num_features * batch + 1]`` bag boundaries.
            per_sample_weights: float per-id weights (pooled kernels only) or None.
        """
        weights = None if per_sample_weights is None else per_sample_weights.float()
        return self.tbe(indices, offsets, per_sample_weights=weights)

    def table_weight(self, index: int) -> torch.Tensor:
        return self.tbe.split_embedding_weights()[index]

    def table_states(self, index: int) -> dict[str, torch.Tensor]:
        if not self.state_names:
            return {}
        states = self.tbe.split_optimizer_states()[index]
        return dict(zip(self.state_names, states, strict=True))

    def get_step(self) -> int:
        return int(self.tbe.iter.item())

    def set_step(self, step: int) -> None:
        self.tbe.iter.fill_(int(step))
        self.tbe.iter_cpu.fill_(int(step))

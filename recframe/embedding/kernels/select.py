"""Backend choice per table and the grouping policy (which tables share one kernel).

Backends (``recframe.vocab.Backend``), in ``auto``'s order of preference (adding one is a member of
``Backend`` and one entry of ``BACKENDS``):

============  ==========================================  ========================================
backend       optimizers                                   limits
============  ==========================================  ========================================
``fbgemm``    CPU: sgd, adagrad, rowwise_adagrad           fbgemm_gpu must import; dim % 4 == 0;
              (no weight decay); CUDA: all six             fp32/fp16 weights
``triton``    all six                                      triton must import; CUDA (CPU only through
                                                           ``TRITON_INTERPRET=1``, never by auto);
                                                           fp32/fp16/bf16, any dim
``torch``     all six, on any device                       none (fp32/fp16/bf16, any dim)
============  ==========================================  ========================================

``backend="auto"`` gives each table the first backend that supports it, so on CPU with fbgemm a
rowwise_adagrad table runs on fbgemm and an adam table on torch, and on a GPU without fbgemm
every table runs on triton (where triton imports); a named backend that cannot run a table is an
error at construction, listing every such table and why.

Grouping policy: tables go in one kernel when they have the same backend, pooling (sum and mean
apart, so that sum groups carry no per-id weights), weight dtype and optimizer (all fields
equal); also the same ``embedding_dim`` unless the backend mixes dims (fbgemm does for pooled
tables; torch never does, it keeps a group in one ``[rows, dim]`` tensor). Groups are ordered by
their first table; inside a group tables keep the collection's order.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer, TableConfig
    >>> tables = [TableConfig(name=f"t{i}", num_embeddings=10, embedding_dim=8, feature_names=[f"f{i}"])
    ...           for i in range(3)]
    >>> groups = plan_groups(tables, SparseOptimizer(name="adam"), torch.device("cpu"), "torch")
    >>> [(g.backend, g.table_indices) for g in groups]
    [('torch', [0, 1, 2])]
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from recframe.embedding.config import SparseOptimizer, TableConfig, table_optimizer
from recframe.embedding.kernels import GroupSpec
from recframe.vocab import Backend, Pooling

log = logging.getLogger("recframe.embedding")


@dataclass(frozen=True)
class KernelBackend:
    """What a kernel backend can run and how it builds a kernel.

    Args:
        name: its name in configs.
        unsupported: ``(table, optimizer, device) -> reason or None``; None means it can run the table.
        mixes_dims: whether one pooled kernel can hold tables of different dims.
        build: ``GroupSpec -> kernel module`` (see ``recframe.embedding.kernels.EmbeddingKernel``).
        auto_devices: the device types on which ``auto`` may pick it; None: any device.
    """

    name: Backend
    unsupported: Callable[[TableConfig, SparseOptimizer, torch.device], str | None]
    mixes_dims: bool
    build: Callable[[GroupSpec], nn.Module]
    auto_devices: tuple[str, ...] | None = ("cpu", "cuda")


def _fbgemm_unsupported(table: TableConfig, optimizer: SparseOptimizer, device: torch.device) -> str | None:
    from recframe.embedding.kernels import fbgemm

    return fbgemm.unsupported(table, optimizer, device)


def _build_fbgemm(spec: GroupSpec) -> nn.Module:
    from recframe.embedding.kernels.fbgemm import FbgemmEmbeddingKernel

    return FbgemmEmbeddingKernel(spec)


def _triton_unsupported(table: TableConfig, optimizer: SparseOptimizer, device: torch.device) -> str | None:
    from recframe.embedding.kernels import triton

    return triton.unsupported(table, optimizer, device)


def _build_triton(spec: GroupSpec) -> nn.Module:
    from recframe.embedding.kernels.triton import TritonEmbeddingKernel

    return TritonEmbeddingKernel(spec)


def _build_torch(spec: GroupSpec) -> nn.Module:
    from recframe.embedding.kernels.torch import TorchEmbeddingKernel

    return TorchEmbeddingKernel(spec)


BACKENDS: dict[Backend, KernelBackend] = {
    Backend.fbgemm: KernelBackend(Backend.fbgemm, _fbgemm_unsupported, mixes_dims=True, build=_build_fbgemm),
    Backend.triton: KernelBackend(Backend.triton, _triton_unsupported, mixes_dims=False, build=_build_triton,
                                  auto_devices=("cuda",)),
    Backend.torch: KernelBackend(Backend.torch, lambda table, optimizer, device: None, mixes_dims=False,
                                 build=_build_torch, auto_devices=None),
}
_logged: set[str] = set()


@dataclass
class GroupPlan:
    """Tables that will share one kernel.

    Args:
        backend: the backend's name.
        table_indices: positions of the group's tables in the collection.
        optimizer: the optimizer they share.
    """

    backend: Backend
    table_indices: list[int]
    optimizer: SparseOptimizer


def choose_backend(table: TableConfig, optimizer: SparseOptimizer, device: torch.device,
                   requested: Backend) -> tuple[Backend | None, list[str]]:
    """The backend for one table and the reasons the preferred ones were passed over.

    Args:
        table: the table.
        optimizer: its optimizer.
        device: where it will live.
        requested: ``auto`` or a backend name.

    Returns:
        ``(backend name or None when the requested one cannot run it, reasons)``.
    """
    # A meta-device collection (built without memory, to be sharded) chooses as on the CPU.
    kind = "cpu" if device.type == "meta" else device.type
    names = ([name for name, b in BACKENDS.items() if b.auto_devices is None or kind in b.auto_devices]
             if requested == Backend.auto else [Backend(requested)])
    reasons = []
    for name in names:
        reason = BACKENDS[name].unsupported(table, optimizer, device)
        if reason is None:
            return name, reasons
        reasons.append(f"{name}: {reason}")
    return None, reasons


def plan_groups(tables: list[TableConfig], optimizer: SparseOptimizer, device: torch.device,
                requested: Backend) -> list[GroupPlan]:
    """Choose each table's backend and group the tables (policy in the module docstring).

    Args:
        tables: the collection's (valid) tables.
        optimizer: the collection's optimizer, for tables without their own.
        device: where the tables will live.
        requested: ``auto`` or a name in ``BACKENDS``.

    Raises:
        ValueError: for an unknown backend, or listing every table the named backend cannot run.
    """
    if Backend.problem("embedding backend", requested) is not None:
        raise ValueError(f"unknown embedding backend {str(requested)!r}; choose one of {Backend.choices()}")
    groups: dict[tuple, GroupPlan] = {}
    errors: list[str] = []
    passed_over: dict[str, list[str]] = {}
    for index, table in enumerate(tables):
        opt = table_optimizer(table, optimizer)
        backend, reasons = choose_backend(table, opt, device, requested)
        if backend is None:
            errors.append(f"table {table.name!r} ({opt.name}, {table.weight_dtype}, dim {table.embedding_dim}) "
                          f"on {device}: {'; '.join(reasons)}")
            continue
        if reasons:
            passed_over.setdefault(f"{'; '.join(reasons)} -> {backend}", []).append(table.name)
        mixed = BACKENDS[backend].mixes_dims and table.pooling != Pooling.none
        key = (backend, table.pooling, table.weight_dtype, _optimizer_key(opt),
               None if mixed else table.embedding_dim)
        groups.setdefault(key, GroupPlan(backend, [], opt)).table_indices.append(index)
    if errors:
        raise ValueError(f"embedding backend '{requested}' cannot run these tables "
                         "(use backend='auto' or 'torch'):\n  " + "\n  ".join(errors))
    plans = list(groups.values())
    summary = ", ".join(f"{p.backend}[{','.join(tables[i].name for i in p.table_indices)}]({p.optimizer.name})"
                        for p in plans)
    message = f"embedding kernels on {device} (backend={requested}): {summary}"
    for reason, names in passed_over.items():
        message += f"; [{','.join(names)}]: {reason}"
    if message not in _logged:  # the choice is logged once per distinct layout
        _logged.add(message)
        log.info(message)
    return plans


def _optimizer_key(opt: SparseOptimizer) -> tuple:
    return tuple(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(opt))

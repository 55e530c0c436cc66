"""Learning-rate schedule of the sparse (fused) optimizer: ``optim.sparse_schedule``, the dense schedule's form.

The fused optimizers read their learning rate where they run: the torch and triton kernels from
their group's ``SparseOptimizer`` (``kernel.spec.optimizer.lr``) when they update, fbgemm from its
module's ``learning_rate_tensor``. ``SparseLrSchedule`` sets both to ``base lr * lr_factor(step)``
before each step (``base lr``: the collection's ``optim.sparse.lr``, or a table's own optimizer's),
for every local kernel, sharded collections included. It changes nothing while the factor stays
the same, so a run without a sparse schedule (the default, factor 1) never touches a kernel. On a
GPU, a triton kernel whose backward is replayed from a CUDA graph captures a new graph when its lr
changes (the lr is one of the graph's constants): a schedule costs captures during warmup and decay.

Example:
    >>> schedule = SparseLrSchedule([ebc], ScheduleConfig(warmup_steps=10))  # doctest: +SKIP
    >>> schedule.step(4); schedule.lr  # doctest: +SKIP
    0.005
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from recframe.config.schema import ScheduleConfig
from recframe.embedding.config import SparseOptimizer
from recframe.training.schedule import lr_factor


def local_collections(collection: nn.Module) -> list[nn.Module]:
    """The unsharded collections that hold a collection's kernels on this process (itself, unless sharded)."""
    local = getattr(collection, "local_collections", None)
    return local() if callable(local) else [collection]


class SparseLrSchedule:
    """Sets the sparse optimizers' lr to ``base * lr_factor(step, cfg)`` (module docstring).

    Args:
        collections: the model's embedding collections (``module.embedding_collections``), sharded or not.
        cfg: the schedule.
    """

    def __init__(self, collections: Iterable[nn.Module], cfg: ScheduleConfig) -> None:
        self.cfg = cfg
        self._factor = 1.0
        self._groups: dict[int, tuple[SparseOptimizer, float, list[nn.Module]]] = {}
        for collection in collections:
            for local in local_collections(collection):
                for kernel in getattr(local, "kernels", []):
                    opt = kernel.spec.optimizer
                    _, _, modules = self._groups.setdefault(id(opt), (opt, float(opt.lr), []))
                    if hasattr(kernel, "tbe"):  # fbgemm: its own lr tensor
                        modules.append(kernel.tbe)

    @property
    def lr(self) -> float | None:
        """The current lr of the first optimizer (the collection's; None without tables)."""
        return next((opt.lr for opt, _, _ in self._groups.values()), None)

    def step(self, step: int) -> None:
        """Set the lr that optimizer step ``step`` (0-based: steps taken so far) updates with."""
        factor = lr_factor(step, self.cfg)
        if factor == self._factor:
            return
        self._factor = factor
        for opt, base, tbes in self._groups.values():
            opt.lr = base * factor
            for tbe in tbes:
                tbe.set_learning_rate(opt.lr)

"""StackedTables: a kernel group's same-dim tables stacked in one ``[total_rows, dim]`` tensor.

The storage that the torch and triton kernels share: the weight (in the tables' weight dtype),
the optimizer states (fp32, per row or per element, as ``optimizers.STATE_LAYOUT`` says), each
feature's first row in the stack, the optimizer step, and the ``EmbeddingKernel`` accessors over
them. A kernel subclasses it and adds its forward and fused backward.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer, TableConfig
    >>> from recframe.embedding.kernels import GroupSpec
    >>> tables = [TableConfig(name=n, num_embeddings=r, embedding_dim=4, feature_names=[n])
    ...           for n, r in [("a", 3), ("b", 5)]]
    >>> spec = GroupSpec(tables=tables, feature_tables=[0, 1], optimizer=SparseOptimizer(name="rowwise_adagrad"),
    ...                  pooled=True, device=torch.device("cpu"))
    >>> stack = StackedTables(spec, "torch")
    >>> stack.weight.shape, stack.table_weight(1).shape, stack.table_states(1)["momentum1"].shape
    (torch.Size([8, 4]), torch.Size([5, 4]), torch.Size([5]))
"""

from __future__ import annotations

import torch
from torch import nn

from recframe.embedding.kernels import DTYPES, GroupSpec
from recframe.embedding.optimizers import STATE_LAYOUT, USES_STEP, new_states


class StackedTables(nn.Module):
    """The stacked storage of one kernel group (see the module docstring).

    Args:
        spec: the group; its tables must share one dim and one weight dtype.
        backend: the backend's name, for the error message.
        scratch_rows: rows allocated after the tables (in the weight and the states) that belong to
            no table: a kernel may send updates it has to discard there, so that their number need
            not be known on the host.
    """

    def __init__(self, spec: GroupSpec, backend: str, scratch_rows: int = 0) -> None:
        super().__init__()
        dims = {t.embedding_dim for t in spec.tables}
        dtypes = {t.weight_dtype for t in spec.tables}
        if len(dims) != 1 or len(dtypes) != 1:
            raise ValueError(f"a {backend} kernel group needs one dim and one weight dtype, got {dims} and {dtypes}")
        self.spec = spec
        self.dim = dims.pop()
        starts = [0]
        for table in spec.tables:
            starts.append(starts[-1] + table.num_embeddings)
        self.table_starts = starts
        self.num_features = len(spec.feature_tables)
        self.register_buffer(
            "weight", torch.empty(starts[-1] + scratch_rows, self.dim, dtype=DTYPES[dtypes.pop()], device=spec.device),
            persistent=False,
        )
        self.state_names = [name for name, _ in STATE_LAYOUT[spec.optimizer.name]]
        for name, tensor in new_states(spec.optimizer.name, starts[-1] + scratch_rows, self.dim, spec.device).items():
            self.register_buffer(name, tensor, persistent=False)
        self.register_buffer(
            "feature_row_start",
            torch.tensor([starts[t] for t in spec.feature_tables], dtype=torch.int64, device=spec.device),
            persistent=False,
        )
        self.step = 0

    def table_weight(self, index: int) -> torch.Tensor:
        return self.weight[self.table_starts[index]:self.table_starts[index + 1]]

    def table_states(self, index: int) -> dict[str, torch.Tensor]:
        lo, hi = self.table_starts[index], self.table_starts[index + 1]
        return {name: getattr(self, name)[lo:hi] for name in self.state_names}

    def get_step(self) -> int:
        return self.step

    def set_step(self, step: int) -> None:
        self.step = int(step)

    @property
    def graph_safe(self) -> bool:
        """Replayable from a caller's CUDA graph, but for optimizers whose step count is a launch argument."""
        return self.spec.optimizer.name not in USES_STEP

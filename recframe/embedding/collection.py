"""EmbeddingBagCollection (pooled) and EmbeddingCollection (sequence): many tables, one module.

Both group their tables into kernels (policy: ``kernels/select.py``), look up every group at
once, and train them with the sparse optimizer fused into backward: ``loss.backward()`` updates
the touched rows and the optimizer state, and the modules have no parameters for a dense
optimizer. Their state is exposed per table, whatever the backend:

- ``state_dict()``: ``{"<table>.weight": [num_embeddings, dim]}`` in the storage dtype.
- ``optimizer_state_dict()``: ``{"<table>": {"momentum1": ..., "momentum2": ..., "step": ...}}``
  with the states of ``optimizers.STATE_LAYOUT`` and ``step`` (int64 scalar) for adam,
  rowwise_adam and lamb. Both return views of the live tensors (clone to keep a snapshot) and
  load back across backends with ``load_state_dict`` / ``load_optimizer_state_dict``.

The collection lives on the device given at construction (fbgemm kernels cannot move).

Example:
    >>> import torch
    >>> from recframe.sparse import KeyedJaggedTensor
    >>> tables = [TableConfig(name="t0", num_embeddings=100, embedding_dim=8, feature_names=["f0", "f1"]),
    ...           TableConfig(name="t1", num_embeddings=50, embedding_dim=4, feature_names=["f2"], pooling="mean")]
    >>> ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad", lr=0.1), backend="torch")
    >>> kjt = KeyedJaggedTensor.from_lengths(["f0", "f1", "f2"], torch.tensor([1, 2, 3, 4, 5]),
    ...                                      torch.tensor([1, 1, 0, 2, 1, 0]))  # batch of 2
    >>> out = ebc(kjt)
    >>> out.keys(), out.values().shape
    (['f0', 'f1', 'f2'], torch.Size([2, 20]))
    >>> out.values().sum().backward()  # the touched rows of t0 and t1 are updated here
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from recframe.embedding.config import SparseOptimizer, TableConfig, check_tables
from recframe.embedding.ids import GroupInput
from recframe.embedding.kernels import GroupSpec
from recframe.embedding.kernels.select import BACKENDS, plan_groups
from recframe.embedding.optimizers import USES_STEP
from recframe.sparse import JaggedTensor, KeyedJaggedTensor, KeyedTensor
from recframe.vocab import Backend, Init, OutputDtype


class _TableCollection(nn.Module):
    """Grouping, kernels, id handling, initialization and per-table state of both collections."""

    def __init__(self, tables: list[TableConfig], optimizer: SparseOptimizer, backend: Backend,
                 device: torch.device | str | None, check_ids: bool, sequence: bool) -> None:
        super().__init__()
        problems = check_tables(list(tables), optimizer, sequence)
        if problems:
            raise ValueError(f"invalid embedding tables ({len(problems)} problems):\n  " + "\n  ".join(problems))
        self.tables = list(tables)
        self.optimizer = optimizer
        self.device = torch.device(device) if device is not None else torch.get_default_device()
        self.plans = plan_groups(self.tables, optimizer, self.device, backend)
        self.feature_names = [f for t in self.tables for f in t.feature_names]
        self._table_slot: dict[int, tuple[int, int]] = {}  # table index -> (group, index in group)
        self._group_features: list[list[str]] = []
        kernels, inputs = [], []
        for g, plan in enumerate(self.plans):
            group = [self.tables[i] for i in plan.table_indices]
            for local, i in enumerate(plan.table_indices):
                self._table_slot[i] = (g, local)
            feature_tables = [local for local, t in enumerate(group) for _ in t.feature_names]
            features = [f for t in group for f in t.feature_names]
            self._group_features.append(features)
            spec = GroupSpec(tables=group, feature_tables=feature_tables, optimizer=plan.optimizer,
                             pooled=not sequence, device=self.device)
            kernels.append(BACKENDS[plan.backend].build(spec))
            inputs.append(GroupInput(
                features, [group[t].name for t in feature_tables], [group[t].num_embeddings for t in feature_tables],
                [group[t].id_policy for t in feature_tables], group[0].pooling, check_ids,
            ).to(self.device))
        self.kernels = nn.ModuleList(kernels)
        self.inputs = nn.ModuleList(inputs)
        self._group_order = [f for features in self._group_features for f in features]
        self._orders: dict[tuple[str, ...], list[int] | None] = {}
        self._init_weights()

    @property
    def backends(self) -> dict[str, str]:
        """The backend of each table, by table name."""
        return {self.tables[i].name: plan.backend for plan in self.plans for i in plan.table_indices}

    def graph_unsafe_tables(self) -> list[str]:
        """The tables whose kernels a caller's CUDA graph may not replay (``EmbeddingKernel.graph_safe``)."""
        return [self.tables[i].name for plan, kernel in zip(self.plans, self.kernels, strict=True)
                if not kernel.graph_safe for i in plan.table_indices]

    # ---- input ----------------------------------------------------------------------------------
    def _split(self, features: KeyedJaggedTensor) -> list[KeyedJaggedTensor]:
        """The batch cut into one KJT per kernel group (keys in group order; extra keys dropped)."""
        keys = tuple(features.keys())
        if keys not in self._orders:
            missing = [f for f in self._group_order if f not in keys]
            if missing:
                raise ValueError(f"features {missing} are missing from the batch (its keys: {list(keys)})")
            order = [keys.index(f) for f in self._group_order]
            self._orders[keys] = None if order == list(range(len(keys))) else order
        order = self._orders[keys]
        if order is None and len(self._group_features) == 1:
            return [features]
        ordered = features if order is None else features.permute(order)
        return ordered.split([len(f) for f in self._group_features])

    # ---- initialization and state ---------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self) -> None:
        """Fill every table from its ``init``, in table order (so all backends draw the same numbers)."""
        for index, table in enumerate(self.tables):
            view = self._weight(index)
            scale = table.init_scale if table.init_scale is not None else 1.0 / math.sqrt(table.num_embeddings)
            target = view if view.dtype == torch.float32 else torch.empty(view.shape, device=view.device)
            if table.init == Init.uniform:
                target.uniform_(-scale, scale)
            elif table.init == Init.normal:
                target.normal_(0.0, scale)
            else:
                target.zero_()
            if target is not view:
                view.copy_(target)

    def _weight(self, index: int) -> torch.Tensor:
        group, local = self._table_slot[index]
        return self.kernels[group].table_weight(local)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for index, table in enumerate(self.tables):
            destination[f"{prefix}{table.name}.weight"] = self._weight(index).detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        own = set()
        for index, table in enumerate(self.tables):
            key = f"{prefix}{table.name}.weight"
            own.add(key)
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value, view = state_dict[key], self._weight(index)
            if tuple(value.shape) != tuple(view.shape):
                error_msgs.append(f"size mismatch for {key}: checkpoint {tuple(value.shape)}, "
                                  f"table {tuple(view.shape)}")
                continue
            with torch.no_grad():
                view.copy_(value)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key not in own and key[len(prefix):].split(".")[0] not in self._modules:
                    unexpected_keys.append(key)

    def optimizer_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The sparse optimizer state per table: ``{table: {state: tensor}}`` (views; see the module docstring)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for index, table in enumerate(self.tables):
            group, local = self._table_slot[index]
            states = dict(self.kernels[group].table_states(local))
            if self.plans[group].optimizer.name in USES_STEP:
                states["step"] = torch.tensor(self.kernels[group].get_step(), dtype=torch.int64)
            out[table.name] = states
        return out

    @torch.no_grad()
    def load_optimizer_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load the result of ``optimizer_state_dict`` (of any backend); every problem is reported at once.

        Args:
            state: ``{table: {state name: tensor}}`` for every table of this collection.

        Raises:
            ValueError: a table or state is missing, unexpected or of the wrong shape, or the
                tables of one kernel group have different steps.
        """
        problems, steps = [], {}
        extra = sorted(set(state) - {t.name for t in self.tables})
        if extra:
            problems.append(f"unexpected tables {extra}")
        for index, table in enumerate(self.tables):
            group, local = self._table_slot[index]
            if table.name not in state:
                problems.append(f"table {table.name!r} is missing")
                continue
            given, own = state[table.name], self.kernels[group].table_states(local)
            opt_name = self.plans[group].optimizer.name
            expected = set(own) | ({"step"} if opt_name in USES_STEP else set())
            if set(given) != expected:
                problems.append(f"table {table.name!r} ({opt_name}) needs states {sorted(expected)}, "
                                f"got {sorted(given)}")
                continue
            for name, view in own.items():
                if tuple(given[name].shape) != tuple(view.shape):
                    problems.append(f"table {table.name!r} state {name!r}: shape {tuple(given[name].shape)}, "
                                    f"expected {tuple(view.shape)}")
            if "step" in given:
                steps.setdefault(group, {})[table.name] = int(given["step"])
        for by_table in steps.values():
            if len(set(by_table.values())) > 1:
                problems.append(f"tables {sorted(by_table)} share a kernel but have different steps {by_table}")
        if problems:
            raise ValueError("cannot load the optimizer state:\n  " + "\n  ".join(problems))
        for index, table in enumerate(self.tables):
            group, local = self._table_slot[index]
            for name, view in self.kernels[group].table_states(local).items():
                view.copy_(state[table.name][name])
        for group, by_table in steps.items():
            self.kernels[group].set_step(next(iter(by_table.values())))


class EmbeddingBagCollection(_TableCollection):
    """Pooled lookups of many tables: KeyedJaggedTensor -> KeyedTensor (see the module docstring).

    Per-id weights of the batch (``kjt.weights()``) make a weighted sum (weighted mean for mean
    tables); an empty bag gives zeros; ids repeated in a bag or across the batch each count.
    Per-id weights are constants: no gradient flows into them.

    Args:
        tables: the tables, pooling ``sum`` or ``mean``; a table may serve several features.
        optimizer: the sparse optimizer of tables whose own ``optimizer`` is None.
        backend: ``auto`` (per table, the first of fbgemm, triton (CUDA only), torch that supports it),
            ``fbgemm``, ``triton`` or ``torch`` (see ``kernels/select.py``).
        device: where the tables live (default: torch's default device, so cpu, or the GPU inside
            Lightning's ``configure_model`` or any ``with torch.device(...)`` block).
        check_ids: raise on ids outside a table's range (tables with id_policy ``error``); on CUDA an
            asynchronous device-side assert, no host sync; False trusts the ids (see ``recframe.embedding.ids``).
        output_dtype: ``fp32`` (default: the output is always fp32) or ``auto``: in autocast's dtype where
            autocast is on for the batch's device (``output_dtype_now``), else fp32. The values are those of
            the fp32 output cast to that dtype, bit for bit (the sums are fp32, rounded once), and the
            gradient arrives in that dtype: the triton kernels write and read it directly (no cast kernels,
            half the gradient bytes); other backends and the ``lookup_hook`` are cast after.

    Example:
        >>> ebc = EmbeddingBagCollection(
        ...     [TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])],
        ...     SparseOptimizer(name="sgd", lr=0.1), backend="torch")
        >>> ebc.state_dict()["t.weight"].shape
        torch.Size([10, 4])
    """

    def __init__(self, tables: list[TableConfig], optimizer: SparseOptimizer, backend: Backend = Backend.auto,
                 device: torch.device | str | None = None, check_ids: bool = True,
                 output_dtype: OutputDtype = OutputDtype.fp32) -> None:
        super().__init__(tables, optimizer, backend, device, check_ids, sequence=False)
        self.output_dtype = OutputDtype(output_dtype)
        self.feature_dims = [t.embedding_dim for t in self.tables for _ in t.feature_names]
        column = {}  # feature -> (group, first column, end column) in that group's output
        for g, features in enumerate(self._group_features):
            start = 0
            for feature in features:
                dim = self.feature_dims[self.feature_names.index(feature)]
                column[feature] = (g, start, start + dim)
                start += dim
        runs: list[tuple[int, int, int]] = []  # output columns as slices of group outputs, merged
        for feature in self.feature_names:
            g, lo, hi = column[feature]
            if runs and runs[-1][0] == g and runs[-1][2] == lo:
                runs[-1] = (g, runs[-1][1], hi)
            else:
                runs.append((g, lo, hi))
        self._runs = runs
        self._layout = KeyedTensor(self.feature_names, self.feature_dims, torch.empty(0, sum(self.feature_dims)))
        # Called instead of kernel group g's kernel when set: ``hook(g, indices, offsets, weights) -> [batch, F * dim]``
        # (the data_parallel runtime, ``recframe.distributed.replicas``, trains the replicas through it).
        self.lookup_hook: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pool every feature of the tables.

        Args:
            features: the batch; must contain every feature of the tables (other keys are ignored).

        Returns:
            ``[batch, sum of dims]`` embeddings in ``output_dtype_now`` (fp32 unless ``output_dtype`` is ``auto``
            and autocast is on), keys = feature names in table order.
        """
        parts = self._split(features)
        batch = features.stride()
        dtype = output_dtype_now(self.output_dtype, features.device())
        if batch == 0:
            values = torch.zeros(0, sum(self.feature_dims), device=features.device(), dtype=dtype)
        else:
            hook = self.lookup_hook
            outs = [kernel(*prep(part), output_dtype=dtype) if hook is None else hook(g, *prep(part))
                    for g, (kernel, prep, part) in enumerate(zip(self.kernels, self.inputs, parts, strict=True))]
            if len(self._runs) == 1:
                g, lo, hi = self._runs[0]
                values = outs[g] if (lo, hi) == (0, outs[g].shape[1]) else outs[g][:, lo:hi]
            else:
                values = torch.cat([outs[g][:, lo:hi] for g, lo, hi in self._runs], dim=1)
            if values.dtype != dtype:  # the hook's fp32 output (replicas): cast, the same values
                values = values.to(dtype)
        return self._layout.with_values(values)


def output_dtype_now(output_dtype: OutputDtype, device: torch.device) -> torch.dtype:
    """The dtype a pooled collection set to ``output_dtype`` returns now for a batch on ``device``.

    Args:
        output_dtype: ``fp32``, or ``auto`` (autocast's dtype where autocast is on for the device type).
        device: the batch's device.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     output_dtype_now(OutputDtype.auto, torch.device("cpu")), output_dtype_now("fp32", torch.device("cpu"))
        (torch.bfloat16, torch.float32)
        >>> output_dtype_now(OutputDtype.auto, torch.device("cpu"))
        torch.float32
    """
    if (output_dtype == OutputDtype.auto and torch.amp.is_autocast_available(device.type)
            and torch.is_autocast_enabled(device.type)):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


class EmbeddingCollection(_TableCollection):
    """Sequence lookups (no pooling): KeyedJaggedTensor -> {feature: JaggedTensor of embeddings}.

    Each output JaggedTensor has the feature's lengths and ``values()`` of shape ``[num_ids, dim]``
    (fp32). Per-id weights of the batch are not applied (they stay in the input).

    Args:
        tables: the tables, pooling ``none``.
        optimizer: the sparse optimizer of tables whose own ``optimizer`` is None.
        backend: ``auto``, ``fbgemm``, ``triton`` or ``torch`` (as EmbeddingBagCollection).
        device: where the tables live (default: torch's default device, as EmbeddingBagCollection).
        check_ids: raise on out-of-range ids (as EmbeddingBagCollection).

    Example:
        >>> import torch
        >>> from recframe.sparse import KeyedJaggedTensor
        >>> ec = EmbeddingCollection(
        ...     [TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"], pooling="none")],
        ...     SparseOptimizer(name="sgd"), backend="torch")
        >>> out = ec(KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 2, 3]), torch.tensor([2, 1])))
        >>> out["f"].values().shape, out["f"].lengths().tolist()
        (torch.Size([3, 4]), [2, 1])
    """

    def __init__(self, tables: list[TableConfig], optimizer: SparseOptimizer, backend: Backend = Backend.auto,
                 device: torch.device | str | None = None, check_ids: bool = True) -> None:
        super().__init__(tables, optimizer, backend, device, check_ids, sequence=True)
        self.feature_dims = [t.embedding_dim for t in self.tables for _ in t.feature_names]

    def forward(self, features: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        """Embed every id of every feature of the tables.

        Args:
            features: the batch; must contain every feature of the tables (other keys are ignored).

        Returns:
            ``{feature: JaggedTensor}`` in table order.
        """
        parts = self._split(features)
        batch = features.stride()
        result: dict[str, JaggedTensor] = {}
        for kernel, prep, part, names in zip(self.kernels, self.inputs, parts, self._group_features, strict=True):
            if batch == 0:
                dim = self.feature_dims[self.feature_names.index(names[0])]
                chunks = [torch.zeros(0, dim, device=features.device())] * len(names)
            else:
                chunks = torch.split(kernel(*prep(part)), part.length_per_key())
            lengths = part.lengths()
            for k, (name, chunk) in enumerate(zip(names, chunks, strict=True)):
                result[name] = JaggedTensor(values=chunk, lengths=lengths[k * batch:(k + 1) * batch])
        return {name: result[name] for name in self.feature_names}


"""``InferenceEmbeddingBags``: a trained EmbeddingBagCollection for inference, in plain torch ops.

It answers the collection's call (``KeyedJaggedTensor -> KeyedTensor``, the same ``feature_names``
and ``feature_dims``), so a model keeps working when its collection is swapped for it, and it
holds the tables in a ``recframe.serving.quantize`` form (fp32, fp16, int8 or int4 rows). Its
forward has no Python branch on data and no host read, so ``torch.export`` traces it with a
dynamic batch size and id count:

1. Every id gets its bag (``repeat_interleave`` of the lengths) and so its key.
2. Per group of tables of one row width (their rows concatenated): the ids of the group's keys,
   hashed (``modulo`` tables) and offset to their table's rows, are looked up at once; an id
   outside its ``error`` table (which training would have refused) weighs 0: its bag pools the
   others, and a serving call never fails on a request (``recframe predict`` checks ids first).
3. The rows, times 1 (sum) or ``1 / bag size`` (mean), are added into their bags (``index_add_``).

The batch's keys are fixed at construction (``batch_keys``: the KJT the serving model builds, in
that order); the collection's features are a subset of them. Ids carry no per-id weights.

Example:
    >>> import torch
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> from recframe.sparse import KeyedJaggedTensor
    >>> ebc = EmbeddingBagCollection([TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])],
    ...                              SparseOptimizer())
    >>> lookup = InferenceEmbeddingBags.from_collection(ebc, "int8", batch_keys=["f"])
    >>> kjt = KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
    >>> torch.allclose(lookup(kjt).values(), ebc(kjt).values(), atol=0.01)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recframe.embedding.config import TableConfig
from recframe.serving.quantize import QuantizedRows
from recframe.sparse import KeyedJaggedTensor, KeyedTensor
from recframe.vocab import IdPolicy, Pooling, Quantize

KERNELS = ("auto", "torch", "triton")


class InferenceEmbeddingBags(nn.Module):
    """Pooled lookups of trained tables, quantized or not, traceable by torch.export.

    Args:
        tables: the collection's tables (pooled: ``sum`` or ``mean``).
        weights: ``{table name: [rows, dim] float tensor}``, the trained rows.
        mode: ``none``, ``fp16``, ``int8`` or ``int4`` (``recframe.vocab.Quantize``).
        batch_keys: the keys of the KeyedJaggedTensors it will get, in their order.
        kernel: ``auto`` (the Triton kernel of ``triton_lookup`` for CUDA tensors where Triton imports, outside
            ``torch.export``; else plain torch), ``torch`` or ``triton``.
    """

    def __init__(self, tables: Sequence[TableConfig], weights: dict[str, torch.Tensor], mode: Quantize | str,
                 batch_keys: Sequence[str], kernel: str = "auto") -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"InferenceEmbeddingBags: kernel={kernel!r}; choose one of {list(KERNELS)}")
        self.kernel = kernel
        self.tables = list(tables)
        self.feature_names = [f for t in self.tables for f in t.feature_names]
        self.feature_dims = [t.embedding_dim for t in self.tables for _ in t.feature_names]
        self.batch_keys = list(batch_keys)
        missing = [f for f in self.feature_names if f not in self.batch_keys]
        if missing:
            raise ValueError(f"InferenceEmbeddingBags: features {missing} are not among the batch keys "
                             f"{self.batch_keys}")
        if any(t.pooling not in (Pooling.sum, Pooling.mean) for t in self.tables):
            raise ValueError("InferenceEmbeddingBags pools (sum or mean); sequence tables (pooling none) are not "
                             "supported by the serving export")
        self.dims = sorted({t.embedding_dim for t in self.tables})
        keys = len(self.batch_keys)
        group_of_key = torch.full((keys,), -1, dtype=torch.int64)
        rows_of_key = torch.ones(keys, dtype=torch.int64)
        offset_of_key = torch.zeros(keys, dtype=torch.int64)
        modulo_of_key = torch.zeros(keys, dtype=torch.bool)
        mean_of_key = torch.zeros(keys, dtype=torch.bool)
        groups = []
        for g, dim in enumerate(self.dims):
            offset, blocks = 0, []
            for t in self.tables:
                if t.embedding_dim != dim:
                    continue
                for f in t.feature_names:
                    k = self.batch_keys.index(f)
                    group_of_key[k], rows_of_key[k], offset_of_key[k] = g, t.num_embeddings, offset
                    modulo_of_key[k], mean_of_key[k] = t.id_policy == IdPolicy.modulo, t.pooling == Pooling.mean
                blocks.append(weights[t.name].detach().float().reshape(t.num_embeddings, dim))
                offset += t.num_embeddings
            groups.append(QuantizedRows.from_weight(torch.cat(blocks), mode))
        self.groups = nn.ModuleList(groups)
        for name, value in (("group_of_key", group_of_key), ("rows_of_key", rows_of_key),
                            ("offset_of_key", offset_of_key), ("modulo_of_key", modulo_of_key),
                            ("mean_of_key", mean_of_key)):
            self.register_buffer(name, value)
        # per output feature (collection order): its key and its group
        self.output_keys = [self.batch_keys.index(f) for f in self.feature_names]
        self.output_groups = [self.dims.index(d) for d in self.feature_dims]

    @staticmethod
    def from_collection(collection: nn.Module, mode: Quantize | str, batch_keys: Sequence[str],
                        kernel: str = "auto") -> InferenceEmbeddingBags:
        """The inference form of a trained ``EmbeddingBagCollection`` (its tables and state dict)."""
        state = collection.state_dict()
        weights = {t.name: state[f"{t.name}.weight"] for t in collection.tables}
        return InferenceEmbeddingBags(collection.tables, weights, mode, batch_keys, kernel)

    def _use_triton(self, device: torch.device) -> bool:
        if self.kernel != "auto":
            return self.kernel == "triton"
        if device.type != "cuda" or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return False
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def num_bytes(self) -> int:
        """Bytes of the tables in their stored form."""
        return sum(g.num_bytes for g in self.groups)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled embeddings ``[batch, sum of dims]``, keys ``feature_names`` (the collection's order)."""
        ids = features.values().long()
        lengths = features.lengths().long()
        batch = features.stride()
        bags = len(self.batch_keys) * batch
        bag = torch.repeat_interleave(torch.arange(bags, device=ids.device), lengths, output_size=ids.numel())
        key = bag // batch
        rows = self.rows_of_key[key]
        hashed = torch.where(self.modulo_of_key[key], torch.remainder(ids, rows), ids)
        in_range = (hashed >= 0) & (hashed < rows)
        weight = in_range.float()
        weight = torch.where(self.mean_of_key[key], weight / lengths[bag].clamp(min=1).float(), weight)
        pooled = []
        triton_kernel = self._use_triton(ids.device)
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]) if triton_kernel else None
        for g, table in enumerate(self.groups):
            use = in_range & (self.group_of_key[key] == g)
            row = torch.where(use, hashed + self.offset_of_key[key], torch.zeros_like(hashed))
            weight_g = torch.where(use, weight, torch.zeros_like(weight))
            if triton_kernel:
                from recframe.serving.triton_lookup import pooled_rows

                out = pooled_rows(table, row, weight_g, offsets)
            else:
                values = table.rows(row) * weight_g.unsqueeze(1)
                out = torch.zeros(bags, table.dim, device=ids.device, dtype=values.dtype).index_add_(0, bag, values)
            pooled.append(out.view(len(self.batch_keys), batch, table.dim))
        columns = [pooled[g][k] for k, g in zip(self.output_keys, self.output_groups, strict=True)]
        return KeyedTensor(self.feature_names, self.feature_dims, torch.cat(columns, dim=1))

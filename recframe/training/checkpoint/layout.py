"""Where each rank's part of a saved embedding tensor sits in the whole table.

A checkpoint keys every table by its name, never by its sharding: the weight of table ``t`` of the
collection at ``model.sparse`` is ``state_dict/model.sparse.t.weight`` whether the table was
row-wise on 2 ranks or whole on 1, and its sparse optimizer states are
``sparse_optimizer/sparse/t/<state>``. Each rank gives torch.distributed.checkpoint its block
with the block's offsets in the whole table (a ``ShardedTensor`` built from the plan's shard
list), so DCP stores the global shape and the chunks, and a later load can ask for any other
blocks: that is resharding.

Per tensor kind:

- ``[rows, dim]`` (weights, element-wise optimizer states): the shard's block.
- ``[rows]`` (per-row optimizer states, rowwise_adagrad / rowwise_adam): the shard's rows. A
  column-wise table has one per-row state per column shard (documented as not exact in
  ``recframe.distributed.sharded``); the first column shard's is saved and every column shard
  loads it.
- scalars (``step`` of adam-like optimizers): the same on every shard, saved once.
- replicated (data_parallel) tables, as their sharding rule says (``ShardingRule.replicated``):
  every rank holds the whole table; saved once.

Example:
    >>> layout = ModelLayout.of(model, prefix="model.", rank=0)  # doctest: +SKIP
    >>> layout.place("state_dict/model.sparse.t0.weight", ndim=2)  # doctest: +SKIP
    Place(global_shape=(1000, 16), shards=((0, (0, 0), (500, 16)), (1, (500, 0), (500, 16))), local=0)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from recframe.distributed.sharding import rule_for
from recframe.distributed.types import ShardSpec

WEIGHT = "weight"


@dataclass(frozen=True)
class Place:
    """The layout of one saved tensor over the ranks.

    Args:
        global_shape: shape of the whole tensor.
        shards: ``(rank, offsets, sizes)`` of every block that is written (they tile the tensor).
        local: index into ``shards`` of this rank's block, or None when this rank needs the whole tensor.
    """

    global_shape: tuple[int, ...]
    shards: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]
    local: int | None


@dataclass(frozen=True)
class TableShards:
    """The shards of one table and which of them this rank holds.

    Args:
        rows: rows of the whole table.
        dim: columns of the whole table.
        specs: every shard of the table (all ranks).
        local: this rank's shard, or None.
        replicated: a data_parallel table (every rank holds all of it).
    """

    rows: int
    dim: int
    specs: tuple[ShardSpec, ...]
    local: ShardSpec | None
    replicated: bool

    def place(self, ndim: int) -> Place | None:
        """The layout of a ``ndim``-dimensional tensor of this table; None: a plain tensor, whole on this rank."""
        spec = self.local
        if spec is None:
            raise KeyError("this rank holds no shard of the table")
        if self.replicated or ndim == 0:
            return None
        if ndim == 2:
            shards = tuple((s.rank, (s.row_start, s.col_start), s.sizes) for s in self.specs)
            return Place((self.rows, self.dim), shards, self.specs.index(spec))
        if ndim == 1:
            writers = [s for s in self.specs if s.col_start == 0]
            shards = tuple((s.rank, (s.row_start,), (s.row_end - s.row_start,)) for s in writers)
            return Place((self.rows,), shards, writers.index(spec) if spec in writers else None)
        raise ValueError(f"a table tensor has 0, 1 or 2 dimensions, got {ndim}")


class ModelLayout:
    """Every embedding table of a model, found by checkpoint key; see the module docstring.

    Args:
        tables: ``(collection path, table name) -> TableShards``.
        prefix: the prefix of the model's keys in the Lightning state dict (``"model."``).
    """

    def __init__(self, tables: dict[tuple[str, str], TableShards], prefix: str) -> None:
        self.tables = tables
        self._weights = {f"state_dict/{prefix}{path + '.' if path else ''}{name}.{WEIGHT}": (path, name)
                         for path, name in tables}

    @staticmethod
    def of(model: nn.Module, prefix: str, rank: int) -> ModelLayout:
        """The layout of ``model``'s sharded embedding collections as this rank (``rank``) holds them.

        Unsharded collections are left out: their tensors are whole on every rank.
        """
        from recframe.distributed.sharded import ShardedEmbeddingBagCollection
        from recframe.training.module import embedding_collections

        tables = {}
        for path, collection in embedding_collections(model).items():
            if not isinstance(collection, ShardedEmbeddingBagCollection):
                continue
            for table in collection.tables:
                specs = tuple(collection.shards[table.name])
                local = next((s for s in specs if s.rank == rank), None)
                tables[(path, table.name)] = TableShards(table.num_embeddings, table.embedding_dim, specs, local,
                                                         rule_for(specs[0].sharding_type).replicated)
        return ModelLayout(tables, prefix)

    def table_of(self, key: str) -> TableShards | None:
        """The table a checkpoint key belongs to (weight or sparse optimizer state), or None."""
        if key in self._weights:
            return self.tables[self._weights[key]]
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "sparse_optimizer":
            return self.tables.get((parts[1], parts[2]))
        return None

    def holds(self, key: str) -> bool:
        """Whether this rank holds (part of) the tensor ``key``: not so for tables whose shards are elsewhere."""
        table = self.table_of(key)
        return table is None or table.local is not None

    def place(self, key: str, ndim: int) -> Place | None:
        """The layout of tensor ``key`` (of ``ndim`` dimensions); None: a plain tensor, whole on this rank."""
        table = self.table_of(key)
        return None if table is None else table.place(ndim)

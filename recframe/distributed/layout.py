"""ShardLayout: where every shard of a sharded collection sits, and the engine's routing that follows.

Pure bookkeeping, the same on every rank (no tensors, no process group): from the tables, the
plan and the world size it gives

- ``shards``: each table's ``ShardSpec`` blocks (its sharding rule's ``shards``);
- ``groups[r]``: rank ``r``'s local collections, one per (replicated?, routed?, compute kernel),
  the model-parallel ones first, then the routed ones (row_wise_routed shards: sequence lookups,
  one row per id), then the replicated ones, each with its shard-sized ``TableConfig``s (``shard_table``);
- ``slots()``: every feature's input to every model-parallel shard, in ``input_dist.Slot`` order (by rank,
  then in the rank's local lookup order), with the rule's slot kind; data_parallel replicas have none
  (each rank looks up its own batch in its replica: ``replicas.py``), and ``model_parallel_features()``
  are the features that do have slots;
- ``mp_dims()`` and ``output_columns(rank)``: the pooled output all-to-all's widths and where each
  received column lands in the collection's output (routed shards are not in it: ``routed.py``);
- ``partial_mean_features()``: the features whose shards pool partial sums of a mean table, so
  the output divides by the bag's size after adding them (``output_dist.OutputDist``).

Example:
    >>> from recframe.distributed.plan import ShardingPlan, TablePlacement
    >>> from recframe.embedding.config import TableConfig
    >>> tables = [TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"], pooling="mean")]
    >>> layout = ShardLayout(tables, ShardingPlan(2, {"t": TablePlacement("row_wise", [0, 1])}), world_size=2)
    >>> [(s.rank, s.row_start, s.row_end) for s in layout.slots()], layout.mp_dims()
    ([(0, 0, 5), (1, 5, 10)], [4, 4])
    >>> layout.groups[1][0].tables[0].pooling, layout.partial_mean_features()
    ('sum', [0])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from recframe.distributed.input_dist import Slot
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.sharding import rule_for
from recframe.distributed.sharding.base import Combine
from recframe.distributed.types import ShardSpec
from recframe.embedding.config import TableConfig
from recframe.vocab import Backend, IdPolicy, Pooling


@dataclass
class LocalGroup:
    """Shards that one rank looks up in one collection.

    Args:
        replicated: data_parallel shards (their output stays on the rank, outside the all-to-all).
        routed: shards that return one row per id (an EmbeddingCollection; ``Combine.pool``).
        kernel: the compute kernel (backend) of the collection.
        specs: the shards' blocks.
        tables: the shards' tables (``shard_table``), in the same order.

    Example:
        >>> group = LocalGroup(False, False, Backend.torch, [ShardSpec("t", "table_wise", 0, 0, 10, 0, 4)], [])
        >>> group.replicated, group.specs[0].sizes
        (False, (10, 4))
    """

    replicated: bool
    routed: bool
    kernel: Backend
    specs: list[ShardSpec]
    tables: list[TableConfig]


def shard_table(table: TableConfig, spec: ShardSpec) -> TableConfig:
    """The TableConfig of one shard: its block's size, the table's init scale, the rule's pooling, trusted ids.

    Ids are checked or hashed on the sending rank (against the whole table), so the shard's
    ``id_policy`` is ``error`` and its collection is built without checks; a replica (data_parallel) is the whole
    table and gets its own rank's raw ids, so it keeps the table's ``id_policy`` (its collection checks them).

    Args:
        table: the whole table.
        spec: the shard's block.

    Example:
        >>> t = TableConfig(name="t", num_embeddings=100, embedding_dim=8, feature_names=["f"], id_policy="modulo")
        >>> s = shard_table(t, ShardSpec("t", "column_wise", 1, 0, 100, 4, 8))
        >>> s.num_embeddings, s.embedding_dim, s.init_scale, s.id_policy
        (100, 4, 0.1, 'error')
    """
    rows, cols = spec.sizes
    scale = table.init_scale if table.init_scale is not None else 1.0 / math.sqrt(table.num_embeddings)
    rule = rule_for(spec.sharding_type)
    return dataclasses.replace(table, num_embeddings=rows, embedding_dim=cols, init_scale=scale,
                               pooling=rule.shard_pooling(table.pooling),
                               id_policy=table.id_policy if rule.replicated else IdPolicy.error,
                               feature_names=list(table.feature_names))


class ShardLayout:
    """The shards of a collection's tables and the routing between ranks (see the module docstring).

    Args:
        tables: the collection's tables.
        plan: the placement of every table (it may place other tables too).
        world_size: ranks in the process group.

    Example:
        >>> from recframe.distributed.plan import TablePlacement
        >>> t = TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f", "g"])
        >>> layout = ShardLayout([t], ShardingPlan(2, {"t": TablePlacement("column_wise", [1, 0])}), world_size=2)
        >>> [(g.specs[0].col_start, [s.rank for s in layout.slots()]) for g in layout.groups[0]], layout.mp_dims()
        ([(2, [0, 0, 1, 1])], [4, 4])
        >>> layout.output_columns(0)  # rank 0's columns 2-3 of f and of g, then rank 1's columns 0-1 of each
        [2, 3, 6, 7, 0, 1, 4, 5]
    """

    def __init__(self, tables: list[TableConfig], plan: ShardingPlan, world_size: int) -> None:
        self.tables, self.plan, self.world_size = list(tables), plan, world_size
        self.feature_names = [f for t in self.tables for f in t.feature_names]
        self.feature_dims = [t.embedding_dim for t in self.tables for _ in t.feature_names]
        self.feature_start = [0]
        for dim in self.feature_dims:
            self.feature_start.append(self.feature_start[-1] + dim)
        self._feature_index = {f: i for i, f in enumerate(self.feature_names)}
        self.shards = {t.name: plan.tables[t.name].shards(t.name, t.num_embeddings, t.embedding_dim, world_size)
                       for t in self.tables}
        by_rank: list[dict[tuple[bool, bool, Backend], LocalGroup]] = [{} for _ in range(world_size)]
        for table in self.tables:
            placement = plan.tables[table.name]
            replicated, routed = placement.rule.replicated, placement.rule.combine == Combine.pool
            for spec in self.shards[table.name]:
                key = (replicated, routed, placement.compute_kernel)
                group = by_rank[spec.rank].setdefault(key, LocalGroup(*key, [], []))
                group.specs.append(spec)
                group.tables.append(shard_table(table, spec))
        # pooled model-parallel collections first, then routed, then data-parallel ones (a stable sort keeps
        # table order)
        self.groups = [sorted(groups.values(), key=lambda g: (g.replicated, g.routed)) for groups in by_rank]

    def slots(self) -> list[Slot]:
        """Every feature's input to every model-parallel shard: by rank, then in the rank's local lookup order
        (``Slot.feature``: the feature's index in ``feature_names``; replicas have no slot)."""
        out = []
        for rank, groups in enumerate(self.groups):
            for group in groups:
                if group.replicated:
                    continue
                for spec, shard in zip(group.specs, group.tables, strict=True):
                    split = rule_for(spec.sharding_type).row_split
                    for f in shard.feature_names:
                        out.append(Slot(rank, self._feature_index[f], spec.row_start if split else 0,
                                        spec.row_end if split else shard.num_embeddings, split, group.routed))
        return out

    def model_parallel_features(self) -> list[int]:
        """Indices (in ``feature_names``) of the features of non-replicated tables: the input dist's features."""
        return [self._feature_index[f] for t in self.tables if not self.plan.tables[t.name].rule.replicated
                for f in t.feature_names]

    def mp_dims(self) -> list[int]:
        """The model-parallel output width of every rank (its block of the pooled output all-to-all)."""
        return [sum(shard.embedding_dim for g in groups if not (g.replicated or g.routed) for shard in g.tables
                    for _ in shard.feature_names) for groups in self.groups]

    def output_columns(self, rank: int) -> list[int]:
        """For each column the output all-to-all gives ``rank`` (every rank's model-parallel blocks in rank order,
        then ``rank``'s data-parallel ones), its column in the collection's output.

        Args:
            rank: the receiving rank.
        """
        out: list[int] = []
        blocks = [(r, False) for r in range(self.world_size)] + [(rank, True)]
        for r, replicated in blocks:
            for group in self.groups[r]:
                if group.replicated != replicated or group.routed:
                    continue
                for spec, shard in zip(group.specs, group.tables, strict=True):
                    for f in shard.feature_names:
                        start = self.feature_start[self._feature_index[f]] + spec.col_start
                        out.extend(range(start, start + shard.embedding_dim))
        return out

    def partial_mean_features(self) -> list[int]:
        """Indices of the features of mean tables whose shards pool partial sums (``Combine.add``)."""
        return [self._feature_index[f] for t in self.tables
                if t.pooling == Pooling.mean and self.plan.tables[t.name].rule.combine == Combine.add
                for f in t.feature_names]

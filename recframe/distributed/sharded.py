"""ShardedEmbeddingBagCollection and ``shard_model``: model-parallel pooled embeddings.

A ``ShardedEmbeddingBagCollection`` replaces an ``EmbeddingBagCollection`` on every rank of a
process group. It keeps the call signature (``KeyedJaggedTensor -> KeyedTensor``) and the
``feature_names`` / ``feature_dims`` attributes, so models do not notice the swap.

Semantics:

- Each rank passes its own local batch (the same batch size ``B`` on every rank, the same keys;
  per-id weights on all ranks or on none is best, though a mix works) and gets the pooled
  embeddings of its own ``B`` samples only.
- Each rank's local shards are ordinary ``EmbeddingBagCollection``s of shard-sized tables (one
  per compute kernel and kind), so every fused sparse optimizer trains every shard; they are
  held outside the module tree (the state dict keys are the table names; DDP never sees them).
- Per step: one input dist (``input_dist.py``: all-to-all of lengths, ids, per-id weights), the
  local lookups on the global batch, one output all-to-all (``comms.PooledAllToAll``), and in
  backward one all-to-all of the gradients.
- Pipelining: ``prefetch(features)`` starts a batch's input dist early (the ids all-to-all then
  travels while the current batch computes) and ``forward(features)`` with the same
  KeyedJaggedTensor object finishes it instead of starting one (see ``prefetch`` for the order of
  collectives that keeps the ranks in step).
- Loss scaling: with ``gradient_division`` (default) the gradients reaching every shard are
  divided by the world size. With a per-rank mean loss (and DDP averaging the dense gradients)
  the updates then equal those of one process training the unsharded model on the
  concatenation of all ranks' batches with a mean loss.

Sharding types (``recframe.distributed.plan``):

- ``table_wise``: the owner looks up the table for the global batch; blocks go back by all-to-all.
- ``row_wise``: ids go to the shard holding their row; each shard pools its ids into partial
  sums that travel back in the output all-to-all and are added on the sample's rank (the
  reduce-scatter of row-wise sharding). Mean pooling: shards pool sums and the sample's rank
  divides by the bag's full size after the reduction (an empty bag gives zeros). Exact for every
  optimizer whose state is per row or per element.
- ``column_wise``: every shard gets all ids of the feature and pools its columns; the blocks are
  concatenated. Exact for element-wise optimizers (sgd, adagrad, adam). NOT exact for
  ``rowwise_adagrad`` / ``rowwise_adam`` (each shard's per-row state is the mean over its own
  columns, not over the whole row) nor ``lamb`` (its trust ratio uses row norms): those train,
  but differ from the unsharded table.
- ``table_row_wise``: row-wise over the ranks of one node; ``local_world_size`` consecutive
  ranks stand for a node (on one machine, a configured local world size). Communication is the
  same flat all-to-all as row_wise (no hierarchical intra/inter-node split yet).
- ``data_parallel``: every rank holds the whole table (placement ranks = all ranks). Its ids
  ride the input all-to-all to every replica, so each replica looks up the global batch; its
  rank's rows are its output; in backward the rank's gradient rows are sent to every replica
  inside the backward all-to-all (an all-gather), so every replica applies the same update of the
  global batch with its fused optimizer, and replicas stay identical without a dense all-reduce.
  They are broadcast from group rank 0 at construction; ``sync_replicas()`` repeats that (on
  GPUs non-deterministic kernels may let replicas drift by rounding).

Checkpoints: ``state_dict()`` holds ``"<table>.weight"`` for each table with a shard on this
rank (the shard's rows and columns only); ``local_shards()`` says where each one sits in its
table (``types.LocalShard``: offsets, sizes, global shape, views of weight and optimizer state).
``optimizer_state_dict()`` is per table shard as the unsharded collection's.

Use, inside an initialized process group (gloo or NCCL), on every rank with the same model
(same seed) and the same plan:

    model = DLRM(EmbeddingBagCollection(tables, opt), ...)
    shard_model(model, plan, process_group=None, device=torch.device("cuda", local_rank))
    model.dense = DDP(...)  # the dense part only; the strategy does that
    logits = model(local_batch); loss.backward()  # updates the local shards
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist
from torch import nn

from recframe.distributed.comms import PooledAllToAll, broadcast_
from recframe.distributed.input_dist import InputDist, Slot
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.prefetch_queue import Prefetched, PrefetchQueue
from recframe.distributed.types import LocalShard, ShardSpec
from recframe.embedding.collection import EmbeddingBagCollection
from recframe.embedding.config import SparseOptimizer, TableConfig, check_tables
from recframe.sparse import KeyedJaggedTensor, KeyedTensor

# Input dists started by ``prefetch`` and not yet consumed, at most (the oldest is finished and dropped):
# a pipelined Lightning run holds batch i (consumed by step i), i + 1 (held by Lightning's fetcher) and
# i + 2 (started when i + 1 was handed out).
MAX_PREFETCHED = 3


def table_shards(table: TableConfig, placement_type: str, ranks: list[int], bounds: list[tuple[int, int]],
                 world_size: int) -> list[ShardSpec]:
    """The shards of one table (data_parallel: one full replica per rank of the world)."""
    rows, cols = table.num_embeddings, table.embedding_dim
    if placement_type == "data_parallel":
        return [ShardSpec(table.name, placement_type, r, 0, rows, 0, cols) for r in range(world_size)]
    if placement_type == "table_wise":
        return [ShardSpec(table.name, placement_type, ranks[0], 0, rows, 0, cols)]
    if placement_type == "column_wise":
        return [ShardSpec(table.name, placement_type, r, 0, rows, lo, hi) for r, (lo, hi) in zip(ranks, bounds,
                                                                                              strict=True)]
    return [ShardSpec(table.name, placement_type, r, lo, hi, 0, cols) for r, (lo, hi) in zip(ranks, bounds,
                                                                                         strict=True)]


def plan_problems(tables: list[TableConfig], plan: ShardingPlan, world_size: int,
                  local_world_size: int | None) -> list[str]:
    """Every reason the plan cannot shard these tables on ``world_size`` ranks (the plan may place more tables)."""
    out = []
    if plan.world_size != world_size:
        out.append(f"the sharding plan is for {plan.world_size} ranks but the process group has {world_size}")
    shapes = {t.name: (t.num_embeddings, t.embedding_dim) for t in tables}
    sub = ShardingPlan(plan.world_size, {n: p for n, p in plan.tables.items() if n in shapes})
    out += sub.problems(shapes)
    for name, placement in sub.tables.items():
        if placement.sharding_type == "data_parallel" and sorted(placement.ranks) != list(range(world_size)):
            out.append(f"table {name!r} (data_parallel): ranks must be all {world_size} ranks, got {placement.ranks}")
        if placement.sharding_type == "table_row_wise":
            if local_world_size is None or local_world_size < 1:
                out.append(f"table {name!r} (table_row_wise) needs local_world_size (ranks per node)")
            elif len({r // local_world_size for r in placement.ranks}) > 1:
                out.append(f"table {name!r} (table_row_wise): ranks {placement.ranks} span several nodes of "
                           f"{local_world_size} ranks; list ranks of one node")
    return out


class ShardedEmbeddingBagCollection(nn.Module):
    """An EmbeddingBagCollection sharded over a process group (see the module docstring).

    Prefer :meth:`from_collection` or :func:`shard_model`, which start from the unsharded
    tables' values; this constructor initializes every shard from its table's ``init`` (with the
    whole table's scale), so the values differ from an unsharded collection's.

    Args:
        tables: the collection's tables, as for ``EmbeddingBagCollection``.
        optimizer: the sparse optimizer of tables without their own.
        plan: placement of every table (``world_size`` = the group's size); may place other tables too.
        process_group: the group (None = the default group). Must be initialized.
        device: where the local shards live (cuda for NCCL).
        check_ids: check ids of ``error`` tables against the whole table, on the sending rank.
        local_world_size: ranks per node, for table_row_wise.
        gradient_division: divide the gradients reaching the shards by the world size.
    """

    def __init__(self, tables: list[TableConfig], optimizer: SparseOptimizer, plan: ShardingPlan,
                 process_group: dist.ProcessGroup | None = None, device: torch.device | str | None = None,
                 check_ids: bool = True, local_world_size: int | None = None, gradient_division: bool = True) -> None:
        super().__init__()
        problems = check_tables(list(tables), optimizer, sequence=False)
        world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        problems += plan_problems(list(tables), plan, world, local_world_size)
        if problems:
            raise ValueError(f"cannot shard the embedding tables ({len(problems)} problems):\n  "
                             + "\n  ".join(problems))
        self.tables, self.optimizer, self.plan = list(tables), optimizer, plan
        self.group, self.world_size, self.rank = process_group, world, rank
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.gradient_division = gradient_division
        self.feature_names = [f for t in self.tables for f in t.feature_names]
        self.feature_dims = [t.embedding_dim for t in self.tables for _ in t.feature_names]
        self._layout = KeyedTensor(self.feature_names, self.feature_dims, torch.empty(0, sum(self.feature_dims)))
        feature_index = {f: i for i, f in enumerate(self.feature_names)}
        feature_start = [0]
        for d in self.feature_dims:
            feature_start.append(feature_start[-1] + d)

        # Shards, then each rank's local collections: one per (data_parallel?, compute kernel).
        self.shards: dict[str, list[ShardSpec]] = {}
        groups: list[dict[tuple[bool, str], list[tuple[ShardSpec, TableConfig]]]] = [{} for _ in range(world)]
        for table in self.tables:
            p = plan.tables[table.name]
            specs = table_shards(table, p.sharding_type, p.ranks,
                                 p.shard_bounds(table.num_embeddings, table.embedding_dim), world)
            self.shards[table.name] = specs
            for spec in specs:
                groups[spec.rank].setdefault((p.sharding_type == "data_parallel", p.compute_kernel), []).append(
                    (spec, _shard_table(table, spec)))
        for r in range(world):  # model-parallel collections first, then data-parallel ones
            groups[r] = {k: groups[r][k] for k in sorted(groups[r], key=lambda k: k[0])}

        slots, mp_dims = [], []
        for r in range(world):
            width = 0
            for (dp, _), members in groups[r].items():
                for spec, shard in members:
                    for f in shard.feature_names:
                        slots.append(Slot(r, feature_index[f], spec.row_start if spec.row_split else 0,
                                          spec.row_end if spec.row_split else shard.num_embeddings, spec.row_split))
                        width += 0 if dp else shard.embedding_dim
            mp_dims.append(width)
        self.mp_dims = mp_dims
        self.input_dist = InputDist(self.feature_names, [t.name for t in self.tables for _ in t.feature_names],
                                    [t.num_embeddings for t in self.tables for _ in t.feature_names],
                                    [t.id_policy for t in self.tables for _ in t.feature_names],
                                    slots, world, rank, process_group, check_ids).to(self.device)

        # Output columns: rank 0's model-parallel blocks, rank 1's, ..., then this rank's data-parallel ones.
        dst: list[int] = []
        blocks = [(r, False) for r in range(world)] + [(rank, True)]
        for r, want_dp in blocks:
            for (dp, _), members in groups[r].items():
                if dp != want_dp:
                    continue
                for spec, shard in members:
                    for f in shard.feature_names:
                        lo = feature_start[feature_index[f]] + spec.col_start
                        dst.extend(range(lo, lo + shard.embedding_dim))
        total = feature_start[-1]
        self._permutation = len(dst) == total and sorted(dst) == list(range(total))
        inverse = [0] * total
        if self._permutation:
            for c, d in enumerate(dst):
                inverse[d] = c
        # Plain tensors, not buffers: they differ between ranks (DDP would broadcast buffers from rank 0).
        self._dst = torch.tensor(dst, dtype=torch.int64, device=self.device)
        self._gather = torch.tensor(inverse, dtype=torch.int64, device=self.device)
        self._identity = self._permutation and dst == list(range(total))
        # Row-split mean tables: divide after the reduction by each bag's full size.
        mean_features = [feature_index[f] for t in self.tables
                         if t.pooling == "mean" and plan.tables[t.name].sharding_type in ("row_wise", "table_row_wise")
                         for f in t.feature_names]
        mean_cols = [c for i in mean_features for c in range(feature_start[i], feature_start[i + 1])]
        mean_col_feature = [k for k, i in enumerate(mean_features) for _ in range(self.feature_dims[i])]
        self._mean_features = torch.tensor(mean_features, dtype=torch.int64, device=self.device)
        self._mean_cols = torch.tensor(mean_cols, dtype=torch.int64, device=self.device)
        self._mean_col_feature = torch.tensor(mean_col_feature, dtype=torch.int64, device=self.device)

        # This rank's local collections, held outside the module tree (see the module docstring).
        local = []
        for (dp, kernel), members in groups[rank].items():
            ebc = EmbeddingBagCollection([shard for _, shard in members], optimizer, backend=kernel,
                                         device=self.device, check_ids=False)
            local.append((dp, [spec for spec, _ in members], ebc))
        self._local = local
        self._local_counts = [len(ebc.feature_names) for _, _, ebc in local]
        self._orders: dict[tuple[str, ...], list[int] | None] = {}
        self._prefetched = PrefetchQueue(MAX_PREFETCHED)
        self.sync_replicas()

    # ---- construction from an unsharded collection ------------------------------------------------
    @staticmethod
    def from_collection(collection: EmbeddingBagCollection, plan: ShardingPlan,
                        process_group: dist.ProcessGroup | None = None, device: torch.device | str | None = None,
                        check_ids: bool = True, local_world_size: int | None = None,
                        gradient_division: bool = True) -> ShardedEmbeddingBagCollection:
        """Shard ``collection``: each rank keeps its blocks of the tables and of their optimizer state.

        A collection on the meta device (built without memory) is not copied: each rank then
        initializes its own shards from the tables' ``init`` (as the constructor does).

        Every rank must hold the same ``collection`` values (build it with the same seed); the
        data-parallel tables are broadcast from group rank 0 anyway. The global random number
        generators are left as they were. Args as the constructor (device: default the collection's).
        """
        target = torch.device(device) if device is not None else collection.device
        if collection.device.type == "meta":  # built without memory: each rank initializes only its shards
            return ShardedEmbeddingBagCollection(collection.tables, collection.optimizer, plan, process_group,
                                                 target, check_ids, local_world_size, gradient_division)
        with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
            sharded = ShardedEmbeddingBagCollection(
                collection.tables, collection.optimizer, plan, process_group,
                target, check_ids, local_world_size, gradient_division)
        weights, states = collection.state_dict(), collection.optimizer_state_dict()
        with torch.no_grad():
            for _, specs, ebc in sharded._local:
                block = {}
                for spec in specs:
                    block[f"{spec.table}.weight"] = _block(weights[f"{spec.table}.weight"], spec)
                ebc.load_state_dict(block)
                ebc.load_optimizer_state_dict({spec.table: {name: _block(value, spec) for name, value in
                                                            states[spec.table].items()} for spec in specs})
        sharded.sync_replicas()
        return sharded

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pool every feature for this rank's samples.

        Args:
            features: this rank's batch (stride ``B``, the same on every rank); must contain every
                feature of the tables (other keys are ignored).

        Returns:
            ``[B, sum of dims]`` fp32, keys = feature names in table order (as the unsharded collection).
        """
        started = self._prefetched.take(features)
        if started is not None:
            kjt, local = started.selected, started.pending.wait()
            if kjt.device().type == "cuda":  # selected on the prefetcher's stream, read on this one
                kjt.record_stream(torch.cuda.current_stream(kjt.device()))
        else:
            kjt = self._select(features)
            local = self.input_dist(kjt)
        batch, world = kjt.stride(), self.world_size
        parts = local.split(self._local_counts) if self._local else []
        mp, dp = [], []
        for (is_dp, _, ebc), part in zip(self._local, parts, strict=True):
            (dp if is_dp else mp).append(ebc(part).values())
        rows = world * batch
        mp_out = torch.cat(mp, dim=1) if mp else torch.zeros(rows, 0, device=self.device)
        dp_out = torch.cat(dp, dim=1) if dp else torch.zeros(rows, 0, device=self.device)
        anchor = torch.empty(0, device=self.device, requires_grad=torch.is_grad_enabled())
        scale = 1.0 / world if self.gradient_division else 1.0
        wide = PooledAllToAll.apply(anchor, mp_out, dp_out, batch, self.mp_dims, self.rank, self.group, scale)
        if self._identity:
            values = wide
        elif self._permutation:
            values = wide.index_select(1, self._gather)
        else:  # row-split partial sums: add every shard's block into the feature's columns
            values = wide.new_zeros(batch, len(self._gather)).index_add(1, self._dst, wide)
        if self._mean_features.numel() and batch > 0:
            sizes = kjt.lengths().view(len(self.feature_names), batch).index_select(0, self._mean_features)
            recip = sizes.clamp(min=1).float().reciprocal().index_select(0, self._mean_col_feature)
            scale_cols = torch.ones_like(values).index_copy(1, self._mean_cols, recip.t())
            values = values * scale_cols
        return self._layout.with_values(values)

    # ---- pipelining: the input dist of a later batch started early ---------------------------------
    def prefetch(self, features: KeyedJaggedTensor) -> None:
        """Start the input dist of a batch that a later ``forward(features)`` (same object) will finish.

        The lengths all-to-all runs now and the ids (and weights) all-to-alls are launched
        asynchronously; ``forward`` of the same KeyedJaggedTensor object then only waits for them.
        A ``forward`` of any other batch (validation) starts and finishes its own input dist and
        leaves the started ones alone; a ``forward`` of a prefetched batch finishes and drops the
        ones started before it (skipped batches). At most ``MAX_PREFETCHED`` are kept: starting
        one more finishes and drops the oldest. ``drop_prefetched()`` finishes and drops them all.

        Order of collectives (why the ranks stay in step): ``prefetch``, ``forward`` and backward
        are collective, and every rank calls them in the same program order, from its main
        thread. The pipeline driver (``recframe.data.prefetch.DevicePrefetcher`` with the
        training module's callback) calls ``prefetch`` for a later batch at one point of the loop,
        the same on every rank: when the loader hands out a batch, i.e. between two steps, never
        inside a forward or backward. So with batch ``j`` started while step ``i`` is ahead
        (``j = i + 1``, or ``i + 2`` behind Lightning's own one-batch fetch), every rank issues:
        batch ``j``'s lengths all-to-all and its ids (weights) all-to-alls, then step ``i``'s
        input dist (or only the wait for it), output all-to-all, the backward all-to-all and
        DDP's gradient all-reduces, then batch ``j + 1``'s input all-to-alls, and so on: one
        sequence on every rank. ``async_op`` only defers a collective's *completion*, never the
        order in which it is issued, and the process group matches collectives by that order
        (gloo by a tag counted per issued collective, NCCL by its one stream per communicator).
        Each wait (the host read of the received lengths in ``start``, ``PendingInput.wait``)
        is for a collective that every rank has already issued, so none can deadlock. Skipping a
        ``prefetch`` is harmless for the order only when every rank skips it (the driver is the
        same code on every rank, and ``forward`` then starts the input dist itself, in order).

        Args:
            features: the rank's batch (as for ``forward``; keys in any order, extra keys ignored).

        Example:
            >>> sharded.prefetch(next_batch.sparse_features)  # doctest: +SKIP
            >>> loss(sharded(batch.sparse_features)).backward()  # doctest: +SKIP
            >>> out = sharded(next_batch.sparse_features)  # only waits for the ids started above  # doctest: +SKIP
        """
        selected = self._select(features)
        self._prefetched.add(Prefetched(features, selected, self.input_dist.start(selected)))

    def drop_prefetched(self) -> None:
        """Finish and forget every started input dist (end of training or of an epoch).

        It issues no collective: it waits for the ones already launched, which every rank launched.

        Example:
            >>> sharded.drop_prefetched()  # doctest: +SKIP
        """
        self._prefetched.drop()

    def _select(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The batch with exactly this collection's features, in order."""
        keys = tuple(features.keys())
        if keys not in self._orders:
            missing = [f for f in self.feature_names if f not in keys]
            if missing:
                raise ValueError(f"features {missing} are missing from the batch (its keys: {list(keys)})")
            order = [keys.index(f) for f in self.feature_names]
            self._orders[keys] = None if order == list(range(len(keys))) else order
        order = self._orders[keys]
        return features if order is None else features.permute(order)

    # ---- state ---------------------------------------------------------------------------------------
    def local_shards(self) -> dict[str, LocalShard]:
        """This rank's shards by table name: block position, live weight and optimizer state views."""
        out = {}
        shapes = {t.name: (t.num_embeddings, t.embedding_dim) for t in self.tables}
        for dp, specs, ebc in self._local:
            weights, states = ebc.state_dict(), ebc.optimizer_state_dict()
            for spec in specs:
                out[spec.table] = LocalShard(spec, shapes[spec.table], weights[f"{spec.table}.weight"],
                                             states[spec.table], dp)
        return out

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for _, _, ebc in self._local:
            for key, value in ebc.state_dict().items():
                destination[prefix + key] = value

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        own = set()
        for _, _, ebc in self._local:
            sub = {}
            for key in ebc.state_dict():
                own.add(prefix + key)
                if prefix + key in state_dict:
                    sub[key] = state_dict[prefix + key]
                else:
                    missing_keys.append(prefix + key)
            ebc.load_state_dict(sub, strict=False)  # a shape mismatch raises, naming the table
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key not in own and key[len(prefix):].split(".")[0] not in self._modules:
                    unexpected_keys.append(key)

    def optimizer_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Sparse optimizer state of each local shard: ``{table: {state: tensor}}`` (views)."""
        out = {}
        for _, _, ebc in self._local:
            out.update(ebc.optimizer_state_dict())
        return out

    def load_optimizer_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load ``optimizer_state_dict()``'s result (of this rank's shards)."""
        own = {spec.table for _, specs, _ in self._local for spec in specs}
        extra = sorted(set(state) - own)
        if extra:
            raise ValueError(f"cannot load the optimizer state: tables {extra} have no shard on rank {self.rank}")
        for _, specs, ebc in self._local:
            ebc.load_optimizer_state_dict({spec.table: state[spec.table] for spec in specs if spec.table in state})

    @torch.no_grad()
    def sync_replicas(self) -> None:
        """Copy group rank 0's data-parallel tables (weights and optimizer state) to every replica (collective)."""
        replicated = [(specs, ebc) for dp, specs, ebc in self._local if dp]
        for specs, ebc in replicated:
            weights, states = ebc.state_dict(), ebc.optimizer_state_dict()
            for spec in specs:
                broadcast_(weights[f"{spec.table}.weight"], 0, self.group)
                for value in states[spec.table].values():
                    if value.dim() > 0:
                        broadcast_(value, 0, self.group)

    def extra_repr(self) -> str:
        kinds = {t.name: self.plan.tables[t.name].sharding_type for t in self.tables}
        return f"rank={self.rank}/{self.world_size}, tables={kinds}"


def _shard_table(table: TableConfig, spec: ShardSpec) -> TableConfig:
    """The TableConfig of one shard: its block's size, the table's init scale, trusted ids, sum for row-split means."""
    rows, cols = spec.sizes
    scale = table.init_scale if table.init_scale is not None else 1.0 / math.sqrt(table.num_embeddings)
    pooling = "sum" if spec.row_split and table.pooling == "mean" else table.pooling
    return dataclasses.replace(table, num_embeddings=rows, embedding_dim=cols, pooling=pooling, init_scale=scale,
                               id_policy="error", feature_names=list(table.feature_names))


def _block(value: torch.Tensor, spec: ShardSpec) -> torch.Tensor:
    """The shard's block of a table-shaped tensor: rows of any per-row tensor, columns of ``[rows, dim]`` ones.

    Per-row optimizer states (rowwise_adagrad) of a column shard keep the whole row's value.
    """
    if value.dim() == 0:
        return value
    out = value[spec.row_start:spec.row_end]
    return out[:, spec.col_start:spec.col_end] if out.dim() == 2 else out


def shard_model(model: nn.Module, plan: ShardingPlan, process_group: dist.ProcessGroup | None = None,
                device: torch.device | str | None = None, check_ids: bool = True,
                local_world_size: int | None = None, gradient_division: bool = True) -> nn.Module:
    """Replace every EmbeddingBagCollection inside ``model`` by its ShardedEmbeddingBagCollection, in place.

    Call it on every rank of ``process_group`` (collective), with the same model values and plan.

    Args:
        model: a model holding EmbeddingBagCollections as attributes (or one itself).
        plan: the placement of every table of every collection (table names are unique in a model).
        process_group: the group (None = the default group).
        device: where the shards live; default each collection's device.
        check_ids: check ids of ``error`` tables on the sending rank.
        local_world_size: ranks per node (table_row_wise).
        gradient_division: divide the shards' gradients by the world size (see the module docstring).

    Returns:
        ``model`` (or the sharded collection when ``model`` is an EmbeddingBagCollection).

    Raises:
        ValueError: listing every problem of the plan (missing or unknown tables, bad placements).
    """
    found = [(name, m) for name, m in model.named_modules(remove_duplicate=False)
             if isinstance(m, EmbeddingBagCollection)]
    tables = [t for _, m in {id(m): (n, m) for n, m in found}.values() for t in m.tables]
    world = dist.get_world_size(process_group)
    problems = plan_problems(tables, plan, world, local_world_size)
    names = {t.name for t in tables}
    problems += [f"the sharding plan places {n!r}, which is not a table of the model" for n in plan.tables
                 if n not in names]
    if not found:
        problems.append(f"{type(model).__name__} holds no EmbeddingBagCollection")
    if problems:
        raise ValueError(f"cannot shard the model ({len(problems)} problems):\n  " + "\n  ".join(problems))
    done: dict[int, ShardedEmbeddingBagCollection] = {}
    for name, module in found:
        if id(module) not in done:
            done[id(module)] = ShardedEmbeddingBagCollection.from_collection(
                module, plan, process_group, device, check_ids, local_world_size, gradient_division)
        if name == "":
            return done[id(module)]
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, done[id(module)])
    return model

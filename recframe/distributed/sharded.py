"""ShardedEmbeddingBagCollection: model-parallel pooled embeddings (``shard_model.py`` swaps them into a model).

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
- Per step: one input dist (``input_dist.py``: all-to-all of lengths, ids, per-id weights) of the
  model-parallel tables' features, their shards' lookups on the global batch, one output all-to-all
  (``comms.PendingPooled``), and in backward one all-to-all of the gradients. data_parallel
  tables take no part in these: each rank looks up its own batch in its replicas, and in backward
  one all-reduce sums the replicas' row gradients before the same fused update on every rank
  (``replicas.ReplicaSync``).
- Overlap of the output dist: ``forward`` returns with the output all-to-all launched
  (``async_op``) and a ``output_dist.LazyKeyedTensor`` that waits for it (and combines the blocks,
  and runs the routed rows' all-to-all) at the model's first read of the values; a model that
  runs dense work between the call and the read (DLRM's bottom MLP) overlaps the two. In backward
  the gradients' all-to-all is launched when the received blocks' gradient is known and waited
  for when the lookups need it, so the same dense work's backward runs in between
  (``comms.PendingPooled``). Every rank issues its collectives in one order: the model code that
  reads the values is the same on every rank (the routed all-to-all is issued at that read).
- Pipelining: ``prefetch(features)`` starts a batch's input dist early (the ids all-to-all then
  travels while the current batch computes) and ``forward(features)`` with the same
  KeyedJaggedTensor object finishes it instead of starting one (see ``prefetch`` for the order of
  collectives that keeps the ranks in step).
- Loss scaling: with ``gradient_division`` (default) the gradients reaching every shard are
  divided by the world size. With a per-rank mean loss (and DDP averaging the dense gradients)
  the updates then equal those of one process training the unsharded model on the
  concatenation of all ranks' batches with a mean loss.

Sharding types: each has a rule object in ``recframe.distributed.sharding`` (its shards, its
slot kind, how its outputs combine, its cost terms, the optimizers it trains exactly); the
engine here asks the rules and never compares types. Construction: ``layout.ShardLayout`` (the
shards and the routing, the same on every rank), this rank's local collections (one per
replicated?/routed?/compute kernel), ``replicas.ReplicaSync`` (the replicated ones' backward),
``input_dist.InputDist`` (the model-parallel features' slots; the received features
come in the local collections' own kernel-group order, so the key reorder happens once, in the
input dist), ``output_dist.OutputDist`` (the output all-to-all, the combination of the blocks, and
the one place where mean tables of row splits are divided by the bag size) and, when a table is
row_wise_routed, ``routed.RoutedOutput`` (its shards' EmbeddingCollections return one row per id,
in an all-to-all of their own, and the sample's rank pools them). Ids are checked or
hashed once, on the sending rank, against the whole table; the shards' collections trust them
(``id_policy`` error, no checks), so their own input stage only hands the ids to the kernels and,
for a mean table whose shards see whole bags (table_wise, column_wise), turns the mean into per-id
weights as an unsharded collection does. A replica's collection gets the rank's raw ids and checks
or hashes them itself, as an unsharded collection does.

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

import torch
import torch.distributed as dist
from torch import nn

from recframe.distributed.comms import broadcast_
from recframe.distributed.input_dist import InputDist
from recframe.distributed.layout import ShardLayout
from recframe.distributed.output_dist import LazyKeyedTensor, OutputDist
from recframe.distributed.pending_input import PendingInput
from recframe.distributed.plan import ShardingPlan
from recframe.distributed.prefetch_queue import Prefetched, PrefetchQueue
from recframe.distributed.qcomms import CommsPrecision
from recframe.distributed.replicas import ReplicaSync
from recframe.distributed.routed import RoutedOutput
from recframe.distributed.types import LocalShard, ShardSpec
from recframe.embedding.collection import EmbeddingBagCollection, EmbeddingCollection, output_dtype_now
from recframe.embedding.config import SparseOptimizer, TableConfig, check_tables
from recframe.sparse import KeyedJaggedTensor, KeyedTensor
from recframe.vocab import OutputDtype

# Input dists started by ``prefetch`` and not yet consumed, at most (the oldest is finished and dropped):
# a pipelined Lightning run holds batch i (consumed by step i), i + 1 (held by Lightning's fetcher) and
# i + 2 (started when i + 1 was handed out).
MAX_PREFETCHED = 3


def _shapes(tables: list[TableConfig]) -> dict[str, tuple[int, int]]:
    return {t.name: (t.num_embeddings, t.embedding_dim) for t in tables}


def _group_order(collection: EmbeddingBagCollection | EmbeddingCollection) -> list[str]:
    """The features of a collection in its kernel groups' order (the order its lookup takes them in)."""
    return [f for plan in collection.plans for i in plan.table_indices for f in collection.tables[i].feature_names]


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
        comms: the pooled all-to-all's wire formats (``qcomms.CommsPrecision``; default fp32, exact).
        output_dtype: as ``EmbeddingBagCollection``'s (``auto``: autocast's dtype under autocast); the local
            lookups and the exchange run in it where that is exact (``OutputDist.exact_in_16_bit``), else in fp32.
    """

    def __init__(self, tables: list[TableConfig], optimizer: SparseOptimizer, plan: ShardingPlan,
                 process_group: dist.ProcessGroup | None = None, device: torch.device | str | None = None,
                 check_ids: bool = True, local_world_size: int | None = None, gradient_division: bool = True,
                 comms: CommsPrecision | None = None, output_dtype: OutputDtype = OutputDtype.fp32) -> None:
        super().__init__()
        self.output_dtype = OutputDtype(output_dtype)
        world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        problems = check_tables(list(tables), optimizer, sequence=False)
        problems += plan.group_problems(_shapes(list(tables)), world, local_world_size)
        if problems:
            raise ValueError(f"cannot shard the embedding tables ({len(problems)} problems):\n  "
                             + "\n  ".join(problems))
        self.tables, self.optimizer, self.plan = list(tables), optimizer, plan
        self.group, self.world_size, self.rank = process_group, world, rank
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.gradient_division = gradient_division
        layout = ShardLayout(self.tables, plan, world)
        self.shards: dict[str, list[ShardSpec]] = layout.shards
        self.feature_names, self.feature_dims = layout.feature_names, layout.feature_dims
        self._empty = KeyedTensor(self.feature_names, self.feature_dims, torch.empty(0, sum(self.feature_dims)))
        # This rank's local collections, held outside the module tree (see the module docstring); routed
        # shards (row_wise_routed) look up one row per id: an EmbeddingCollection.
        # Replicas (data_parallel) check their own rank's ids themselves (``layout.shard_table``).
        self._local = [(g.replicated, g.specs, (EmbeddingCollection if g.routed else EmbeddingBagCollection)(
            g.tables, optimizer, backend=g.kernel, device=self.device, check_ids=check_ids and g.replicated))
            for g in layout.groups[rank]]
        model_parallel = [ebc for replicated, _, ebc in self._local if not replicated]
        self._local_counts = [len(ebc.feature_names) for ebc in model_parallel]
        # The input dist carries the features of model-parallel tables only; replicas look up the rank's own batch.
        mp = layout.model_parallel_features()
        self._mp_index = None if len(mp) == len(self.feature_names) else mp
        position = {f: i for i, f in enumerate(mp)}
        by_slot = [f for ebc in model_parallel for f in ebc.feature_names]
        tables_of = {f: t for t in self.tables for f in t.feature_names}
        names = [self.feature_names[f] for f in mp]
        self.input_dist = InputDist(
            names, [tables_of[f].name for f in names], [tables_of[f].num_embeddings for f in names],
            [tables_of[f].id_policy for f in names],
            [dataclasses.replace(slot, feature=position[slot.feature]) for slot in layout.slots()], world, rank,
            process_group, check_ids, [by_slot.index(f) for ebc in model_parallel for f in _group_order(ebc)]
        ).to(self.device) if mp else None
        replicas = [ebc for replicated, _, ebc in self._local if replicated]
        self.replicas = ReplicaSync(replicas, process_group, self.device) if replicas else None
        grad_scale = 1.0 / world if gradient_division else 1.0
        self.output_dist = OutputDist(layout, rank, process_group, self.device, grad_scale, comms, local_world_size)
        self.routed = RoutedOutput(layout, rank, process_group, grad_scale, comms) \
            if any(s.routed for s in layout.slots()) else None
        if self.output_dtype == OutputDtype.auto and self.output_dist.exact_in_16_bit and self.routed is None:
            for _, _, ebc in self._local:  # 16-bit outputs travel as they are (else the combined output is cast)
                ebc.output_dtype = OutputDtype.auto
        self._orders: dict[tuple[str, ...], list[int] | None] = {}
        self._prefetched = PrefetchQueue(MAX_PREFETCHED)
        self.sync_replicas()

    # ---- construction from an unsharded collection ------------------------------------------------
    @staticmethod
    def from_collection(collection: EmbeddingBagCollection, plan: ShardingPlan,
                        process_group: dist.ProcessGroup | None = None, device: torch.device | str | None = None,
                        check_ids: bool = True, local_world_size: int | None = None,
                        gradient_division: bool = True, comms: CommsPrecision | None = None
                        ) -> ShardedEmbeddingBagCollection:
        """Shard ``collection``: each rank keeps its blocks of the tables and of their optimizer state.

        A collection on the meta device (built without memory) is not copied: each rank then
        initializes its own shards from the tables' ``init`` (as the constructor does).

        Every rank must hold the same ``collection`` values (build it with the same seed); the
        data-parallel tables are broadcast from group rank 0 anyway. The global random number
        generators are left as they were. Args as the constructor (device: default the collection's; the
        output dtype is the collection's).
        """
        target = torch.device(device) if device is not None else collection.device
        args = (collection.tables, collection.optimizer, plan, process_group, target, check_ids, local_world_size,
                gradient_division, comms, collection.output_dtype)
        if collection.device.type == "meta":  # built without memory: each rank initializes only its shards
            return ShardedEmbeddingBagCollection(*args)
        with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
            sharded = ShardedEmbeddingBagCollection(*args)
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
            ``[B, sum of dims]`` in ``output_dtype_now`` (fp32 unless ``output_dtype`` is ``auto`` under autocast),
            keys = feature names in table order (as the unsharded collection), as
            a ``LazyKeyedTensor``: the output all-to-all is in flight on return and its values are waited
            for (and combined) at their first read, so the model's work before that read overlaps it.
        """
        started = self._prefetched.take(features)
        if started is not None:
            kjt, pending = started.selected, started.pending
            if kjt.device().type == "cuda":  # selected on the prefetcher's stream, read on this one
                kjt.record_stream(torch.cuda.current_stream(kjt.device()))
        else:
            kjt = self._select(features)
            pending = self._start(kjt)
        mp, dp, rows = [], [], {}
        if pending is not None:
            parts = iter(pending.wait().split(self._local_counts))
            for replicated, _, module in self._local:
                if replicated:
                    continue
                part = next(parts)
                if isinstance(module, EmbeddingCollection):  # routed shards: one row per id
                    rows.update({f: jagged.values() for f, jagged in module(part).items()})
                else:
                    mp.append(module(part).values())
        if self.replicas is not None:  # the rank's own samples in its replicas (their keys picked by each collection)
            self.replicas.begin()
            dp = [module(kjt).values() for replicated, _, module in self._local if replicated]
        pooled = self.output_dist.start(mp, dp, kjt.stride())
        lengths = kjt.lengths()
        dtype = output_dtype_now(self.output_dtype, features.device())  # autocast's state now, not at the read

        def finish() -> torch.Tensor:  # at the model's first read of the values (see the module docstring)
            values = self.output_dist.combine(pooled.wait(), lengths)
            if self.routed is not None:
                assert pending is not None
                values = self.routed(values, rows, pending.counts, pending.routed, lengths)
            return values if values.dtype == dtype else values.to(dtype)

        return LazyKeyedTensor(self._empty, finish)

    # ---- pipelining: the input dist of a later batch started early ---------------------------------
    def prefetch(self, features: KeyedJaggedTensor) -> None:
        """Start the input dist of a batch that a later ``forward(features)`` (same object) will finish.

        The lengths all-to-all runs now and the ids (and weights) all-to-alls are launched
        asynchronously; ``forward`` of the same KeyedJaggedTensor object then only waits for them.
        A ``forward`` of any other batch (validation) starts and finishes its own input dist and
        leaves the started ones alone; a ``forward`` of a prefetched batch finishes and drops the
        ones started before it (skipped batches). At most ``MAX_PREFETCHED`` are kept: starting
        one more finishes and drops the oldest. ``drop_prefetched()`` finishes and drops them all.

        Order of collectives: the ranks stay in step as ``prefetch_queue``'s module docstring explains.

        Args:
            features: the rank's batch (as for ``forward``; keys in any order, extra keys ignored).

        Example:
            >>> sharded.prefetch(next_batch.sparse_features)  # doctest: +SKIP
            >>> loss(sharded(batch.sparse_features)).backward()  # doctest: +SKIP
            >>> out = sharded(next_batch.sparse_features)  # only waits for the ids started above  # doctest: +SKIP
        """
        selected = self._select(features)
        self._prefetched.add(Prefetched(features, selected, self._start(selected)))

    def drop_prefetched(self) -> None:
        """Finish and forget every started input dist (end of training or of an epoch).

        It issues no collective: it waits for the ones already launched, which every rank launched.

        Example:
            >>> sharded.drop_prefetched()  # doctest: +SKIP
        """
        self._prefetched.drop()

    def _start(self, kjt: KeyedJaggedTensor) -> PendingInput | None:
        """Start the input dist of the model-parallel features of ``kjt`` (None: every table is replicated)."""
        if self.input_dist is None:
            return None
        return self.input_dist.start(kjt if self._mp_index is None else kjt.permute(self._mp_index))

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
    def local_collections(self) -> list[EmbeddingBagCollection | EmbeddingCollection]:
        """This rank's local collections (their kernels hold the shards; ``recframe.training.sparse_lr``)."""
        return [ebc for _, _, ebc in self._local]

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


def _block(value: torch.Tensor, spec: ShardSpec) -> torch.Tensor:
    """The shard's block of a table-shaped tensor: rows of any per-row tensor, columns of ``[rows, dim]`` ones.

    Per-row optimizer states (rowwise_adagrad) of a column shard keep the whole row's value.
    """
    if value.dim() == 0:
        return value
    out = value[spec.row_start:spec.row_end]
    return out[:, spec.col_start:spec.col_end] if out.dim() == 2 else out

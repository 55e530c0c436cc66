"""The pooled output exchange, flat or with a node-level reduce of table_row_wise partial sums.

The output dist (``comms.PendingPooled``) sends each rank's model-parallel pooled outputs to the
samples' ranks in one uneven all-to-all; an exchange object says what each rank sends to whom:

- :class:`FlatExchange`: rank ``r`` sends every destination ``s`` the rows of ``s``'s samples of all its
  blocks (``[B, D_r]``); the partial sums of a row split travel one per shard and are added on ``s``.
- :class:`NodeReduceExchange`: the partial sums of a table whose rule reduces inside the node
  (``ShardingRule.reduce_groups``: table_row_wise, per node of its ranks, the two or more it has there) are first
  summed among the table's ranks of one node with one ``reduce_scatter_tensor`` over their subgroup (the fast
  intra-node link): the group's ``k``-th rank of ``T`` ends with the reduced rows of the destinations ``s`` with
  ``s % |T| == k`` (with a whole node, the destinations of its own local rank on every node), and only it sends
  them, in the same all-to-all as every other block. A table on several nodes has one group per node: each
  destination receives one sum per node and adds them, as it adds a row_wise table's partial sums. The
  cross-node bytes of that table's pooled output shrink by ``|T|``. Backward mirrors it: each destination
  sends the gradient to the one rank of each group that sent it the reduced rows, and an
  ``all_gather_into_tensor`` over the subgroup gives every shard of the group the gradient of all destinations
  (a sum's gradient is the same for every addend).

:class:`NodeReduceLayout` is the bookkeeping (pure, the same on every rank); the node reduce applies
only where it saves cross-node bytes: two or more of a table's ranks on one node, in a world of more than one
node (on one node of the world, or from a node's lone rank of the table, the flat exchange is used).

Example:
    >>> from recframe.distributed.layout import ShardLayout
    >>> from recframe.distributed.plan import ShardingPlan, TablePlacement
    >>> from recframe.embedding.config import TableConfig
    >>> tables = [TableConfig(name="t", num_embeddings=10, embedding_dim=2, feature_names=["f"]),
    ...           TableConfig(name="u", num_embeddings=10, embedding_dim=1, feature_names=["g"])]
    >>> plan = ShardingPlan(4, {"t": TablePlacement("table_row_wise", [0, 1]),
    ...                         "u": TablePlacement("table_wise", [1])})
    >>> reduce = NodeReduceLayout(ShardLayout(tables, plan, world_size=4), node_size=2)
    >>> [(g.ranks, g.columns) for g in reduce.groups]
    [((0, 1), (0, 1))]
    >>> [reduce.send_widths(r) for r in range(4)]  # rank 0 sends t's reduced rows to ranks 0 and 2, rank 1 to 1 and 3
    [[2, 0, 2, 0], [1, 3, 1, 3], [0, 0, 0, 0], [0, 0, 0, 0]]
    >>> reduce.output_columns(1)  # from rank 0: nothing; from rank 1: u's column, then t's reduced columns
    [2, 0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from recframe.distributed.layout import ShardLayout


@dataclass(frozen=True)
class ReduceGroup:
    """The tables reduced among the same ranks of one node, and the output columns they fill (a table on several
    nodes is in one group per node).

    Args:
        ranks: the tables' ranks, sorted (all on one node).
        columns: the collection's output columns of the tables' features, in table order.
        world_size: ranks in the process group.

    Example:
        >>> group = ReduceGroup((2, 3), (0, 1, 2), world_size=4)
        >>> [group.sender(s) for s in range(4)], group.slots, group.dests(1)
        ([2, 3, 2, 3], 2, [1, 3])
    """

    ranks: tuple[int, ...]
    columns: tuple[int, ...]
    world_size: int

    def sender(self, dest: int) -> int:
        """The rank that sends ``dest`` the reduced rows (``ranks[dest % len(ranks)]``).

        Args:
            dest: the destination rank.
        """
        return self.ranks[dest % len(self.ranks)]

    @property
    def slots(self) -> int:
        """Destinations per rank of the group, padded up (the reduce-scatter's equal chunks)."""
        return -(-self.world_size // len(self.ranks))

    def dests(self, index: int) -> list[int]:
        """The destinations of the group's ``index``-th rank, in order.

        Args:
            index: the rank's position in ``ranks``.
        """
        return list(range(index, self.world_size, len(self.ranks)))

    def chunk_order(self) -> list[int]:
        """For each of the ``len(ranks) * slots`` reduce-scatter rows, its destination (``world_size``: padding)."""
        return [dests[i] if i < len(dests) else self.world_size
                for dests in (self.dests(k) for k in range(len(self.ranks))) for i in range(self.slots)]


class NodeReduceLayout:
    """Who sends which columns to whom when node-reduced tables' partial sums are summed first (module docstring).

    Args:
        layout: the collection's shard layout.
        node_size: ranks per node (None: unknown; no node reduce).

    Example:
        >>> NodeReduceLayout(layout, node_size=8).groups  # doctest: +SKIP
    """

    def __init__(self, layout: ShardLayout, node_size: int | None) -> None:
        self.world_size = world = layout.world_size
        mp_dims = layout.mp_dims()
        mp_columns = layout.output_columns(0)[:sum(mp_dims)]
        starts = [sum(mp_dims[:r]) for r in range(world)]
        self.sender_columns = [mp_columns[start:start + dim] for start, dim in zip(starts, mp_dims, strict=True)]
        self._layout = layout
        self.groups = _reduce_groups(layout, node_size)
        reduced = [{c for g in self.groups if r in g.ranks for c in g.columns} for r in range(world)]
        self.flat_index = [[i for i, c in enumerate(cols) if c not in reduced[r]]
                           for r, cols in enumerate(self.sender_columns)]

    def group_index(self, rank: int, group: ReduceGroup) -> list[int]:
        """The positions of ``group``'s columns among ``rank``'s model-parallel output columns.

        Args:
            rank: a rank of the group.
            group: one of ``groups``.
        """
        position = {c: i for i, c in enumerate(self.sender_columns[rank])}
        return [position[c] for c in group.columns]

    def send_widths(self, rank: int) -> list[int]:
        """The columns ``rank`` sends each destination: its flat blocks, and the groups it sends that one.

        Args:
            rank: the sending rank.
        """
        flat = len(self.flat_index[rank])
        return [flat + sum(len(g.columns) for g in self.groups if g.sender(s) == rank) for s in range(self.world_size)]

    def output_columns(self, rank: int) -> list[int]:
        """For each column ``rank`` receives (senders in rank order: flat blocks, then reduced groups; then its
        data-parallel columns), its column in the collection's output.

        Args:
            rank: the receiving rank.
        """
        out: list[int] = []
        for sender, columns in enumerate(self.sender_columns):
            out.extend(columns[i] for i in self.flat_index[sender])
            for group in self.groups:
                if group.sender(rank) == sender:
                    out.extend(group.columns)
        return out + self._layout.output_columns(rank)[sum(len(c) for c in self.sender_columns):]


def _reduce_groups(layout: ShardLayout, node_size: int | None) -> list[ReduceGroup]:
    """The node-reduced tables grouped by their ranks of one node (sorted), where the reduce saves cross-node bytes."""
    if node_size is None or layout.world_size <= node_size:
        return []
    columns: dict[tuple[int, ...], list[int]] = {}
    for index, name in enumerate(layout.feature_names):
        table = next(t for t in layout.tables if name in t.feature_names)
        placement = layout.plan.tables[table.name]
        start = layout.feature_start[index]
        for ranks in placement.rule.reduce_groups(placement.ranks, node_size):
            columns.setdefault(ranks, []).extend(range(start, start + layout.feature_dims[index]))
    return [ReduceGroup(ranks, tuple(cols), layout.world_size) for ranks, cols in sorted(columns.items())]


class FlatExchange:
    """Each rank sends every destination its rows of all blocks; no reduce (see the module docstring).

    Args:
        mp_dims: the model-parallel output width of every rank.
        rank: this rank.

    Example:
        >>> ex = FlatExchange([2, 3], rank=1)
        >>> ex.send_widths, ex.recv_widths, ex.pack(torch.ones(4, 3), batch=2).shape
        ([3, 3], [2, 3], torch.Size([12]))
    """

    def __init__(self, mp_dims: list[int], rank: int) -> None:
        self.active = any(mp_dims)  # the same on every rank: False when every table is data_parallel
        self.width = mp_dims[rank]
        self.send_widths = [self.width] * len(mp_dims)
        self.recv_widths = list(mp_dims)

    def pack(self, mp: torch.Tensor, batch: int) -> torch.Tensor:
        """The flat send buffer (destination 0's ``[batch, width]`` first) of ``mp`` ``[world * batch, D_r]``.

        Args:
            mp: this rank's model-parallel outputs, rows of rank ``s``'s samples at ``s * batch``.
            batch: the local batch size.
        """
        return mp.reshape(-1)

    def unpack_grad(self, recv: torch.Tensor, batch: int) -> torch.Tensor:
        """``mp``'s gradient ``[world * batch, D_r]`` from the received flat gradients (sender 0's first).

        Args:
            recv: what the gradients' all-to-all gave this rank.
            batch: the local batch size.
        """
        return recv.view(len(self.send_widths) * batch, self.width)


@dataclass(frozen=True)
class _OwnGroup:
    """A reduce group this rank belongs to, with its subgroup and index tensors (on the outputs' device)."""

    group: ReduceGroup
    subgroup: dist.ProcessGroup
    columns: torch.Tensor  # the group's columns among this rank's model-parallel output columns
    chunk_order: torch.Tensor  # ReduceGroup.chunk_order()
    back: torch.Tensor  # the all-gathered row of each destination
    dests: list[int]  # the destinations this rank sends the reduced rows to


class NodeReduceExchange(FlatExchange):
    """The exchange with node-level reduce-scatters (see the module docstring); collective construction.

    One subgroup per ``ReduceGroup``, made with ``dist.new_group`` on every rank, in the groups' (sorted) order
    (``new_group`` is collective over the default group: ``group`` must hold every rank of the world, as the
    training strategy's default group does); the collectives of a rank's groups run in that order too.

    Args:
        reduce: the bookkeeping.
        rank: this rank in ``group``.
        group: the process group (None = the default group).
        device: where the outputs are.

    Example:
        >>> ex = NodeReduceExchange(NodeReduceLayout(layout, node_size=2), rank, None, device)  # doctest: +SKIP
    """

    def __init__(self, reduce: NodeReduceLayout, rank: int, group: dist.ProcessGroup | None,
                 device: torch.device) -> None:
        super().__init__([len(c) for c in reduce.sender_columns], rank)
        self.send_widths = reduce.send_widths(rank)
        self.recv_widths = [reduce.send_widths(sender)[rank] for sender in range(reduce.world_size)]
        self.world_size = world = reduce.world_size
        self.flat_index = torch.tensor(reduce.flat_index[rank], dtype=torch.int64, device=device)
        self.own: list[_OwnGroup] = []
        for g in reduce.groups:
            members = [r if group is None else dist.get_global_rank(group, r) for r in g.ranks]
            subgroup = dist.new_group(members)  # every rank calls, in the same order
            if rank not in g.ranks:
                continue
            size = len(g.ranks)
            back = [(s % size) * g.slots + s // size for s in range(world)]
            self.own.append(_OwnGroup(
                g, subgroup, torch.tensor(reduce.group_index(rank, g), dtype=torch.int64, device=device),
                torch.tensor(g.chunk_order(), dtype=torch.int64, device=device),
                torch.tensor(back, dtype=torch.int64, device=device), g.dests(g.ranks.index(rank))))

    def pack(self, mp: torch.Tensor, batch: int) -> torch.Tensor:
        """Reduce-scatter this rank's groups' partial sums, then the send buffer of flat and reduced rows.

        Args as :meth:`FlatExchange.pack`.
        """
        world = self.world_size
        flat = mp.index_select(1, self.flat_index)
        if not self.own:  # every destination gets the same columns: the rows are already in destination order
            return flat.reshape(-1)
        per_dest = [[flat[s * batch:(s + 1) * batch]] for s in range(world)]
        for own in self.own:
            width = len(own.group.columns)
            partial = mp.index_select(1, own.columns).view(world, batch, width)
            padded = torch.cat([partial, partial.new_zeros(1, batch, width)])  # row ``world``: the padding
            reduced = partial.new_zeros(own.group.slots, batch, width)
            if batch:  # the same batch size on every rank: all members skip together
                dist.reduce_scatter_tensor(reduced, padded.index_select(0, own.chunk_order), group=own.subgroup)
            for slot, dest in enumerate(own.dests):
                per_dest[dest].append(reduced[slot])
        return torch.cat([torch.cat(blocks, dim=1).reshape(-1) for blocks in per_dest])

    def unpack_grad(self, recv: torch.Tensor, batch: int) -> torch.Tensor:
        """Split the received gradients into the flat blocks' and the groups', and all-gather the groups' ones.

        Args as :meth:`FlatExchange.unpack_grad`.
        """
        world, flat = self.world_size, self.flat_index.numel()
        grad = recv.new_zeros(world * batch, self.width)
        if not self.own:
            return grad.index_copy_(1, self.flat_index, recv.view(world * batch, flat))
        pieces = [p.view(batch, w) for p, w in zip(recv.split([batch * w for w in self.send_widths]),
                                                   self.send_widths, strict=True)]
        grad.index_copy_(1, self.flat_index, torch.cat([p[:, :flat] for p in pieces]))
        used = [flat] * world  # columns of each destination's piece read so far
        for own in self.own:
            width = len(own.group.columns)
            mine = recv.new_zeros(own.group.slots, batch, width)
            for slot, dest in enumerate(own.dests):
                mine[slot] = pieces[dest][:, used[dest]:used[dest] + width]
                used[dest] += width
            gathered = recv.new_zeros(len(own.group.ranks) * own.group.slots, batch, width)
            if batch:
                dist.all_gather_into_tensor(gathered, mine, group=own.subgroup)
            grad.index_copy_(1, own.columns, gathered.index_select(0, own.back).view(world * batch, width))
        return grad

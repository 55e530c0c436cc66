"""Table health over several ranks: every table's numbers merged from the shards and batches of all ranks.

``merged_numbers`` gives, on every rank of the default process group (all of them must call it: it runs
collectives), each table's vector of ``table_health._table_numbers`` (row-norm sum, max, count, min, sum of
squares; the histogram; each optimizer state's mean and max; the lookup-count stats) for the whole table:

- lookup counts: a copy of ``LookupCounts.counts`` and ``out_of_range`` summed over the ranks;
- row norms: each rank's rows (a row_wise shard's block, a table_wise table on its rank) give sum, count and
  sum of squares (summed), min and max (max of max and of -min), then the histogram bucketed with the global
  min and max (summed). A column-split table's rows are whole only once their squared partial norms are summed
  over the ranks (one vector of the table's rows); rank 0 then counts them. Replicas (data_parallel tables, or
  unsharded collections in every process) count once: rank 0's;
- optimizer states: sum and element count (summed), max; a per-row state of a column split counts once (the
  shard holding column 0: every column shard keeps the whole row's value).

Six collectives at most, whatever the number of tables; the numbers stay on the device (rank 0 reads them).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from recframe.embedding.config import TableConfig, table_optimizer
from recframe.embedding.optimizers import STATE_LAYOUT
from recframe.vocab import OptimizerName

if TYPE_CHECKING:
    from recframe.training.table_health import LookupCounts


def bucket_counts(bucket: torch.Tensor, bins: int) -> torch.Tensor:
    """How many of ``bucket``'s values (each in ``[0, bins)``) fall in each bucket, as float64, without the host
    sync of ``torch.bincount`` (its output size is the largest value + 1, read from the device).

    Example:
        >>> bucket_counts(torch.tensor([0, 2, 2]), 4).tolist()
        [1.0, 0.0, 2.0, 0.0]
    """
    counts = torch.zeros(bins, dtype=torch.float64, device=bucket.device)
    return counts.index_add_(0, bucket, torch.ones(bucket.shape, dtype=torch.float64, device=bucket.device))


def element_count(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.numel()`` as a float64 0-d tensor on its device: a fill kernel (``torch.tensor(n, device=cuda)``
    copies from pageable host memory and waits for the device)."""
    return torch.full((), float(tensor.numel()), dtype=torch.float64, device=tensor.device)


def summed_counts(counts: LookupCounts) -> LookupCounts:
    """A copy of ``counts`` whose per-row counts and out-of-range ids are summed over the ranks (collective)."""
    out = copy.copy(counts)
    out.counts, out.out_of_range = counts.counts.clone(), counts.out_of_range.clone()
    dist.all_reduce(out.counts)
    dist.all_reduce(out.out_of_range)
    return out


class _Part:
    """One table's contribution on this rank: its row norms (maybe none) and its states (maybe none)."""

    def __init__(self, table: TableConfig, rows: int, dim: int, state_names: list[str]) -> None:
        self.table, self.shape, self.state_names = table, (rows, dim), state_names
        self.norms: torch.Tensor | None = None
        self.states: list[torch.Tensor | None] = [None] * len(state_names)
        self.column_split = False
        self.squares: torch.Tensor | None = None  # a column split's squared partial row norms (this rank's shard)
        self.row_start = 0


def _state_names(table: TableConfig, collection: nn.Module) -> list[str]:
    default = getattr(collection, "optimizer", None)
    optimizer = table_optimizer(table, default) if default is not None else table.optimizer
    if optimizer is None:
        return []
    return [name for name, _ in STATE_LAYOUT[OptimizerName(optimizer.name)]]


def _norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.float().norm(dim=1).double()


def _parts(collections: list[nn.Module], rank: int) -> list[_Part]:
    """Every table's contribution on this rank, in the same order on every rank."""
    parts = []
    for collection in collections:
        local = collection.local_shards() if hasattr(collection, "local_shards") else None
        layout = getattr(collection, "shards", {})
        if local is None:
            weights, states = collection.state_dict(), collection.optimizer_state_dict()
        for table in collection.tables:
            names = _state_names(table, collection)
            part = _Part(table, table.num_embeddings, table.embedding_dim, names)
            parts.append(part)
            part.column_split = any(s.col_end - s.col_start < table.embedding_dim for s in layout.get(table.name, []))
            if local is None:  # an unsharded collection: the same table in every process
                if rank == 0 and f"{table.name}.weight" in weights:
                    part.norms = _norms(weights[f"{table.name}.weight"])
                    part.states = [states.get(table.name, {}).get(n) for n in names]
                continue
            shard = local.get(table.name)
            if shard is None or not shard.weight.numel() or (shard.replicated and rank != 0):
                continue
            if part.column_split:
                part.squares = shard.weight.float().pow(2).sum(dim=1).double()
                part.row_start = shard.spec.row_start
            else:
                part.norms = _norms(shard.weight)
            per_row = dict(STATE_LAYOUT[OptimizerName(table_optimizer(table, collection.optimizer).name)])
            part.states = [None if part.column_split and per_row.get(n) and shard.spec.col_start else
                           shard.optimizer_state.get(n) for n in names]
    return parts


def _whole_column_splits(parts: list[_Part], rank: int, device: torch.device) -> None:
    """The row norms of column-split tables: their squared partial norms summed over the ranks, on rank 0."""
    split = [p for p in parts if p.column_split]
    if not split:
        return
    sizes = [p.shape[0] for p in split]
    squares = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
    start = 0
    for part, size in zip(split, sizes, strict=True):
        if part.squares is not None:
            squares[start + part.row_start:start + part.row_start + part.squares.numel()] += part.squares
        start += size
    dist.all_reduce(squares)
    for part, whole in zip(split, squares.split(sizes), strict=True):
        part.norms = whole.sqrt() if rank == 0 else None


def merged_numbers(collections: list[nn.Module], counts: LookupCounts | None, rank: int, device: torch.device,
                   histogram_bins: int) -> tuple[list[tuple[TableConfig, tuple[int, int], list[str]]], torch.Tensor]:
    """Every table's numbers over all ranks (module docstring): ``(table, shape, state names)`` per table and one
    float64 vector on ``device``, the tables' ``_table_numbers`` vectors one after another (collectives)."""
    reduced = summed_counts(counts) if counts is not None else None
    parts = _parts(collections, rank)
    _whole_column_splits(parts, rank, device)
    empty = torch.zeros(0, dtype=torch.float64, device=device)
    inf = torch.full((), float("inf"), dtype=torch.float64, device=device)
    added, largest = [], []  # summed: per table sum, count, squares, per state sum and count; max: max, -min, states
    for part in parts:
        norms = part.norms if part.norms is not None else empty
        added.append(torch.stack([norms.sum(), element_count(norms), (norms * norms).sum()]))
        largest.append(torch.stack([norms.max(), -norms.min()]) if norms.numel() else torch.stack([-inf, -inf]))
        for state in part.states:
            values = state.to(device).double() if state is not None and state.numel() else empty
            added.append(torch.stack([values.sum(), element_count(values)]))
            largest.append(values.max().view(1) if values.numel() else -inf.view(1))
    added_all, largest_all = torch.cat(added), torch.cat(largest)
    dist.all_reduce(added_all)
    dist.all_reduce(largest_all, op=dist.ReduceOp.MAX)
    histograms, lows, highs = [], [], []
    m = 0
    for part in parts:
        low, high = -largest_all[m + 1], largest_all[m]
        lows.append(low)
        highs.append(high)
        norms = part.norms if part.norms is not None else empty
        width = (high - low).clamp_min(1e-12) / histogram_bins
        bucket = ((norms - low) / width).long().clamp(0, histogram_bins - 1)
        histograms.append(bucket_counts(bucket, histogram_bins))
        m += 2 + len(part.states)
    histogram_all = torch.cat(histograms)
    dist.all_reduce(histogram_all)
    vectors, found = [], []
    stats = reduced.stats_matrix([part.table.name for part in parts]) if reduced is not None and parts else None
    a = m = 0
    for i, part in enumerate(parts):
        total, count, squares = added_all[a:a + 3]
        pieces = [torch.stack([total, highs[i], count, lows[i], squares]),
                  histogram_all[i * histogram_bins:(i + 1) * histogram_bins]]
        for j in range(len(part.states)):
            state_sum, state_count = added_all[a + 3 + 2 * j:a + 5 + 2 * j]
            pieces.append(torch.stack([state_sum / state_count.clamp_min(1), largest_all[m + 2 + j]]))
        if stats is not None:
            pieces.append(stats[i])
        vectors.append(torch.cat(pieces))
        found.append((part.table, part.shape, part.state_names))
        a, m = a + 3 + 2 * len(part.states), m + 2 + len(part.states)
    return found, torch.cat(vectors)

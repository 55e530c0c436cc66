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
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from recframe.embedding.config import TableConfig, table_optimizer
from recframe.embedding.optimizers import STATE_LAYOUT
from recframe.training.table_numbers import equal_runs, histograms, segment_constants
from recframe.vocab import OptimizerName

if TYPE_CHECKING:
    from recframe.training.table_health import LookupCounts


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
    float64 vector on ``device``, the tables' ``_table_numbers`` vectors one after another (collectives). All
    tables' row norms are reduced together (``table_numbers.per_table``: one op per run of tables with as many
    rows here), their histograms in one ``index_add_``; each state in two ops."""
    reduced = summed_counts(counts) if counts is not None else None
    parts = _parts(collections, rank)
    _whole_column_splits(parts, rank, device)
    if not parts:
        return [], torch.zeros(0, dtype=torch.float64, device=device)
    held = [p.norms for p in parts if p.norms is not None and p.norms.numel()]
    sizes = [p.norms.numel() if p.norms is not None else 0 for p in parts]
    norms = torch.cat(held) if len(held) > 1 else held[0] if held else torch.zeros(0, dtype=torch.float64,
                                                                                       device=device)
    count = segment_constants(tuple(sizes), device)[1]
    states = [s.to(device) if s is not None and s.numel() else None for p in parts for s in p.states]
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    state_sums = [s.sum(dtype=torch.float64).view(1) if s is not None else zero for s in states]
    state_maxes = [s.amax().double().view(1) if s is not None else zero - math.inf for s in states]
    state_count = segment_constants(tuple(s.numel() if s is not None else 0 for s in states), device)[1] \
        if states else zero[:0]
    added_all = torch.cat([_per_part(norms, sizes, lambda b: b.sum(dim=1), 0.0), count,
                           _per_part(norms * norms, sizes, lambda b: b.sum(dim=1), 0.0), *state_sums, state_count])
    largest_all = torch.cat([_per_part(norms, sizes, lambda b: b.amax(dim=1), -math.inf),
                             _per_part(norms, sizes, lambda b: -b.amin(dim=1), -math.inf), *state_maxes])
    dist.all_reduce(added_all)
    dist.all_reduce(largest_all, op=dist.ReduceOp.MAX)
    t, s = len(parts), len(states)
    total, count, squares = added_all[:t], added_all[t:2 * t], added_all[2 * t:3 * t]
    state_mean = added_all[3 * t:3 * t + s] / added_all[3 * t + s:].clamp_min(1)
    high, low = largest_all[:t], -largest_all[t:2 * t]
    width = (high - low).clamp_min(1e-12) / histogram_bins
    histogram_all = histograms(norms, sizes, low, width, histogram_bins)
    dist.all_reduce(histogram_all)
    columns = [torch.stack([total, high, count, low, squares], dim=1), histogram_all.view(t, histogram_bins)]
    pairs = torch.stack([state_mean, largest_all[2 * t:]], dim=1)
    stats = reduced.stats_matrix([part.table.name for part in parts]) if reduced is not None else None
    found = [(part.table, part.shape, part.state_names) for part in parts]
    if len({len(part.states) for part in parts}) == 1:  # as many states each: one cat of [tables, ...] columns
        columns += [pairs.view(t, -1)] + ([stats] if stats is not None else [])
        return found, torch.cat(columns, dim=1).reshape(-1)
    pieces, at = [], 0
    for i, part in enumerate(parts):
        pieces += [columns[0][i], columns[1][i], pairs[at:at + len(part.states)].reshape(-1)]
        pieces += [stats[i]] if stats is not None else []
        at += len(part.states)
    return found, torch.cat(pieces)


def _per_part(values: torch.Tensor, sizes: list[int], reduce: Callable[[torch.Tensor], torch.Tensor],
              empty: float) -> torch.Tensor:
    """``table_numbers.per_table`` where a table may have no rows here (its value: ``empty``)."""
    out, at = [], 0
    for first, end in equal_runs(sizes):
        if sizes[first] == 0:
            out.append(torch.full((end - first,), empty, dtype=values.dtype, device=values.device))
            continue
        rows = (end - first) * sizes[first]
        out.append(reduce(values[at:at + rows].view(end - first, -1)))
        at += rows
    return out[0] if len(out) == 1 else torch.cat(out)

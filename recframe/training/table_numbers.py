"""Table health's numbers of many tables in a few batched ops: reductions over stacked rows.

A kernel group stacks its same-dim tables in one ``[total_rows, dim]`` weight (``kernels/stacked.py``); the
tables' weights (and optimizer states) are adjacent views of it. ``run_numbers`` takes such a run of tables
and computes every table's ``table_health._table_numbers`` vector at once: the row norms of the whole run in
one op; per table sum, max, min and sum of squares by one reduction over a ``[tables, rows]`` view for each
run of tables of as many rows (``per_table``: all 26 tables of the dlrm experiment at once; a reduction over
the whole device each, where a segmented reduction would give a 40M-row table one thread block); the
histograms by one ``index_add_`` a run into ``tables x bins`` buckets (each table's buckets from its own min and max,
as one table alone); the states' mean and max likewise. A write of 26 tables of as many rows runs ~30 ops
where one table at a time ran ~35 a table. Tables not adjacent in memory form runs of one (``adjacent_runs``).

No host sync: sizes are host ints, per-table constants are cached on the device (made once with fill kernels).

Example:
    >>> stack = torch.arange(12.0).view(6, 2)
    >>> numbers = run_numbers(stack, [2, 4], [], None, bins=3).view(2, -1)
    >>> numbers[:, 2].tolist(), numbers[:, 5:8].tolist()  # each table's rows and 3 buckets
    ([2.0, 4.0], [[1.0, 0.0, 1.0], [2.0, 1.0, 1.0]])
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_CONSTANTS: dict[tuple[tuple[int, ...], torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def segment_constants(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lengths int64, lengths float64, arange int64)`` of a run's segment sizes on ``device``, cached: made once
    from fill kernels (``torch.tensor(sizes, device=cuda)`` would copy from pageable memory and wait).

    Example:
        >>> [t.tolist() for t in segment_constants((3, 5), torch.device("cpu"))]
        [[3, 5], [3.0, 5.0], [0, 1]]
    """
    key = (sizes, device)
    if key not in _CONSTANTS:
        lengths = torch.cat([torch.full((1,), n, dtype=torch.int64, device=device) for n in sizes])
        _CONSTANTS[key] = (lengths, lengths.double(), torch.arange(len(sizes), device=device))
    return _CONSTANTS[key]


def equal_runs(sizes: list[int]) -> list[tuple[int, int]]:
    """``(first, end)`` of the runs of equal consecutive sizes.

    Example:
        >>> equal_runs([5, 5, 3, 5])
        [(0, 2), (2, 3), (3, 4)]
    """
    runs, first = [], 0
    for i in range(1, len(sizes) + 1):
        if i == len(sizes) or sizes[i] != sizes[first]:
            runs.append((first, i))
            first = i
    return runs


def per_table(values: torch.Tensor, sizes: list[int], reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """One value per table: ``reduce`` (over dim 1) of each run of equal-size tables as a ``[tables, -1]`` view.

    Args:
        values: the tables' values one after another along dim 0 (contiguous), ``sizes[i]`` rows each.
        sizes: each table's rows.
        reduce: ``[tables, elements] -> [tables]`` (e.g. ``lambda b: b.amax(dim=1)``).

    Example:
        >>> per_table(torch.arange(7.0), [2, 2, 3], lambda b: b.sum(dim=1)).tolist()
        [1.0, 5.0, 15.0]
    """
    out, at = [], 0
    for first, end in equal_runs(sizes):
        rows = (end - first) * sizes[first]
        out.append(reduce(values[at:at + rows].reshape(end - first, -1)))
        at += rows
    return out[0] if len(out) == 1 else torch.cat(out)


def histograms(norms: torch.Tensor, sizes: list[int], low: torch.Tensor, width: torch.Tensor,
               bins: int) -> torch.Tensor:
    """``[tables * bins]`` bucket counts (float64): table ``i``'s norms in ``bins`` even buckets from ``low[i]`` by
    ``width[i]`` (the last one takes the rest), as for one table alone; one ``index_add_`` per run of equal-size
    tables, each bucketed by broadcasting over a ``[tables, rows]`` view. Tables of no rows here count nothing.

    Example:
        >>> histograms(torch.tensor([0.0, 1.0, 2.0, 5.0]), [3, 1], torch.tensor([0.0, 5.0]),
        ...            torch.tensor([1.0, 1.0]), bins=2).tolist()
        [1.0, 2.0, 1.0, 0.0]
    """
    histogram = torch.zeros(len(sizes) * bins, dtype=torch.float64, device=norms.device)
    at = 0
    for first, end in equal_runs(sizes):
        if not sizes[first]:
            continue
        block = norms[at:at + (end - first) * sizes[first]].view(end - first, -1)
        offset = torch.arange(first * bins, end * bins, bins, device=norms.device).view(-1, 1)
        bucket = ((block - low[first:end, None]) / width[first:end, None]).long().clamp_(0, bins - 1).add_(offset)
        histogram.index_add_(0, bucket.view(-1), torch.ones(bucket.numel(), dtype=torch.float64, device=norms.device))
        at += block.numel()
    return histogram


Run = tuple[int, int, list[torch.Tensor]]  # first item, end item, each tensor of the run as one view


MAX_RUN_ROWS = 1 << 24  # a run's rows at most (its norms, buckets: ~40 bytes a row at once), unless one table has more


def adjacent_runs(items: list[tuple[torch.Tensor, ...]], keys: list[object], max_rows: int = MAX_RUN_ROWS) -> list[Run]:
    """Runs of consecutive items (a table's weight and states) whose tensors each lie right after the previous
    item's in one storage (same dtype, trailing shape, contiguous; same key), of ``max_rows`` rows at most:
    ``(first, end, each tensor of the run as one view)``. An item alone forms a run of one.

    Example:
        >>> stack = torch.zeros(7, 2)
        >>> runs = adjacent_runs([(stack[:3],), (stack[3:],), (torch.zeros(2, 2),)], keys=[0, 0, 0])
        >>> [(a, b, tuple(views[0].shape)) for a, b, views in runs]
        [(0, 2, (7, 2)), (2, 3, (2, 2))]
    """
    runs: list[Run] = []
    first, rows = 0, items[0][0].shape[0] if items else 0
    for i in range(1, len(items) + 1):
        if i < len(items) and keys[i] == keys[i - 1] and len(items[i]) == len(items[i - 1]) and all(
                _follows(a, b) for a, b in zip(items[i - 1], items[i], strict=True)) \
                and rows + items[i][0].shape[0] <= max_rows:
            rows += items[i][0].shape[0]
            continue
        views = []
        for j, head in enumerate(items[first]):
            rows = sum(item[j].shape[0] for item in items[first:i])
            views.append(head if i - first == 1 else head.as_strided((rows, *head.shape[1:]), head.stride()))
        runs.append((first, i, views))
        first, rows = i, items[i][0].shape[0] if i < len(items) else 0
    return runs


def _follows(before: torch.Tensor, after: torch.Tensor) -> bool:
    return (before.is_contiguous() and after.is_contiguous() and before.dtype == after.dtype
            and before.device == after.device and before.shape[1:] == after.shape[1:]
            and before.untyped_storage().data_ptr() == after.untyped_storage().data_ptr()
            and after.data_ptr() == before.data_ptr() + before.numel() * before.element_size())


def run_numbers(weight: torch.Tensor, rows: list[int], states: list[torch.Tensor], counted: torch.Tensor | None,
                bins: int) -> torch.Tensor:
    """The ``_table_numbers`` vectors of a run of tables, one after another (float64, on the device).

    Args:
        weight: the run's rows, ``[sum(rows), dim]`` (the tables' weights one after another).
        rows: each table's rows (each at least 1).
        states: each optimizer state of the run's tables, the tables' values one after another, any shape
            whose first dim is the rows (per row or per element).
        counted: ``[tables, 3]`` lookup-count stats (``LookupCounts.stats_matrix``) or None.
        bins: histogram buckets.
    """
    counts = segment_constants(tuple(rows), weight.device)[1]
    norms = (weight if weight.dtype == torch.float32 else weight.float()).norm(dim=1).double()
    high = per_table(norms, rows, lambda b: b.amax(dim=1))
    low = per_table(norms, rows, lambda b: b.amin(dim=1))
    width = (high - low).clamp_min(1e-12) / bins
    histogram = histograms(norms, rows, low, width, bins)
    columns = [per_table(norms, rows, lambda b: b.sum(dim=1)), high, counts, low,
               per_table(norms * norms, rows, lambda b: b.sum(dim=1))]
    parts = [torch.stack(columns, dim=1), histogram.view(len(rows), bins)]
    for state in states:
        parts.append(torch.stack([per_table(state, rows, lambda b: b.double().mean(dim=1)),
                                  per_table(state, rows, lambda b: b.amax(dim=1).double())], dim=1))
    if counted is not None:
        parts.append(counted)
    return torch.cat(parts, dim=1).reshape(-1)

"""Table health in TensorBoard: lookup counts per row, and every N steps what they and the tables show.

``LookupCounts`` counts, on the device and without a host sync, how often each row of each table
was looked up by this process's batches (one int32 per row of every table, all tables in one buffer:
4 bytes a row, a sixteenth of a dim-16 fp32 table), and how many ids lay outside their table's rows
(folded in by ``id_policy=modulo``: the hashed ids; an ``error`` table stops on them instead).

``TableHealth`` (every ``logger.table_stats_every_n_steps``) writes per table ``<t>``, from rank 0:

- ``tables/<t>/row_norm`` (histogram) and ``tables/<t>/row_norm_mean``, ``row_norm_max``: the L2
  norms of the table's rows;
- ``tables/<t>/coverage``: the share of the table's rows looked up at least once so far;
- ``tables/<t>/top1pct_share``: the share of the lookups that went to the most looked-up 1% of rows (skew);
- ``tables/<t>/out_of_range``: ids outside the table so far (``modulo`` tables; 0 otherwise);
- ``tables/<t>/<state>_mean`` and ``_max``: the fused optimizer's state (rowwise Adagrad: ``momentum1``);
- ``tables/summary``: a text table of the above, one line per table.

With several ranks every rank takes part at those steps (collectives: ``table_health_ranks``): the numbers are
those of the whole tables (the shards of all ranks, a data_parallel table's replica once) and of all ranks'
batches (the lookup counts summed over the ranks at the step; each rank keeps counting its own).

The numbers of all tables are computed on the device, a kernel group's stacked tables together in a few batched ops
(``table_numbers``), and read without waiting on a GPU (``DeferredRead``: an
asynchronous copy to the host; rank 0's merged numbers with several ranks): a write is logged, at the step it
was computed, at the end of a later step once its copy has arrived, at the latest at the end of training (or at
the next write). On the CPU it is logged at once.

Example:
    >>> counts = LookupCounts([TableConfig(name="t", num_embeddings=4, embedding_dim=2, feature_names=["f"])],
    ...                       torch.device("cpu"))
    >>> counts.update(KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 1, 3]), torch.tensor([2, 1])))
    >>> counts.of("t").tolist(), counts.stats("t")["coverage"]
    ([0, 2, 0, 1], 0.5)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from recframe.embedding.config import TableConfig
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.sparse.ops import repeat_segments
from recframe.training.deferred_read import DeferredRead
from recframe.training.module import embedding_collections
from recframe.training.table_health_ranks import merged_numbers
from recframe.training.table_numbers import adjacent_runs, per_table, run_numbers, segment_constants
from recframe.vocab import IdPolicy

log = logging.getLogger(__name__)
COUNT_STATS = ("coverage", "top1pct_share", "out_of_range")
HISTOGRAM_BINS = 30


FoundTable = tuple[TableConfig, tuple[int, ...], list[str]]  # a table written: its config, shape, float state names
PendingWrite = tuple[int, list[FoundTable], DeferredRead]  # a write not logged yet: its step, tables, numbers


class LookupCounts:
    """Per-row lookup counts of tables, kept on the device (module docstring).

    Args:
        tables: the tables (whole, as configured).
        device: where the counts live (the training device).
    """

    def __init__(self, tables: Sequence[TableConfig], device: torch.device) -> None:
        self.tables = {t.name: t for t in tables}
        starts, total = {}, 0
        for t in tables:
            starts[t.name], total = total, total + t.num_embeddings
        self._starts = starts
        self._scratch = total  # ids of features that no table serves land here
        self.counts = torch.zeros(total + 1, dtype=torch.int32, device=device)
        self.out_of_range = torch.zeros(len(tables), dtype=torch.int64, device=device)
        self._table_index = {t.name: i for i, t in enumerate(tables)}
        self._feature_table = {f: t.name for t in tables for f in t.feature_names}
        self._layouts: dict[tuple[str, ...], tuple[torch.Tensor, ...]] = {}
        self._checked: dict[tuple[str, ...], bool] = {}  # every key's table checks its ids (id_policy=error)

    def _layout(self, keys: tuple[str, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Per key of a KJT: its table's first row in ``counts``, its rows (1 for the scratch), its table index,
        whether a table serves it."""
        if keys not in self._layouts:
            names = [self._feature_table.get(k) for k in keys]
            start = [self._starts[n] if n else self._scratch for n in names]
            rows = [self.tables[n].num_embeddings if n else 1 for n in names]
            index = [self._table_index[n] if n else 0 for n in names]
            known = [int(n is not None) for n in names]
            self._layouts[keys] = tuple(torch.tensor(v, dtype=torch.int64, device=device)
                                        for v in (start, rows, index, known))
            self._checked[keys] = all(n is not None and self.tables[n].id_policy != IdPolicy.modulo for n in names)
        return self._layouts[keys]

    @torch.no_grad()
    def update(self, features: KeyedJaggedTensor) -> None:
        """Count a batch's lookups (no host sync: sizes come from tensor shapes).

        Where every key's table has ``id_policy=error`` (its ids were checked by the lookup), the row is the
        key's start plus the id, in a few kernels (1.7 ms a step at MLPerf's 1.75M ids on an H100 went to
        folding ids into range and counting out-of-range ones, which only ``modulo`` tables report; then
        1.8 ms to ``repeat_interleave``'s one warp per key: ``ops.repeat_segments``).
        """
        keys, ids = tuple(features.keys()), features.values()
        if not keys or ids.numel() == 0:
            return
        start, rows, table, known = self._layout(keys, ids.device)
        per_key = features.lengths().view(len(keys), -1).sum(dim=1)
        ones = torch.ones_like(ids, dtype=torch.int32)
        if self._checked[keys]:  # clamped: ids trusted unchecked (check_ids=False) never index outside ``counts``
            row = repeat_segments(start, per_key, ids.numel()).add_(ids).clamp_(0, self._scratch)
            self.counts.index_add_(0, row, ones)
            return
        key_of = repeat_segments(torch.arange(len(keys), device=ids.device), per_key, ids.numel())
        key_rows = rows[key_of]
        outside = ((ids < 0) | (ids >= key_rows)).long() * known[key_of]
        self.counts.index_add_(0, start[key_of] + ids.remainder(key_rows), ones)
        self.out_of_range.index_add_(0, table[key_of], outside)

    def of(self, table: str) -> torch.Tensor:
        """The lookup counts of a table's rows (a view)."""
        start = self._starts[table]
        return self.counts[start:start + self.tables[table].num_embeddings]

    def stats(self, table: str) -> dict[str, float]:
        """``coverage``, ``top1pct_share`` and ``out_of_range`` of a table so far (reads the device)."""
        return dict(zip(COUNT_STATS, self.stats_tensor(table).tolist(), strict=True))

    def stats_tensor(self, table: str) -> torch.Tensor:
        """:meth:`stats` as a float64 tensor on the device, in the order of ``COUNT_STATS`` (no host sync)."""
        return self.stats_matrix([table])[0]

    def stats_matrix(self, tables: list[str]) -> torch.Tensor:
        """:meth:`stats_tensor` of several tables, one row each (``[tables, 3]``, no host sync): tables next to each
        other in ``counts`` share their reductions, and those of as many rows one ``topk``."""
        rows = []
        first = 0
        for i in range(1, len(tables) + 1):
            if i < len(tables) and self._table_index[tables[i]] == self._table_index[tables[i - 1]] + 1:
                continue
            rows.append(self._adjacent_stats(tables[first:i]))
            first = i
        return torch.cat(rows)

    def _adjacent_stats(self, tables: list[str]) -> torch.Tensor:
        """:meth:`stats_matrix` of tables next to each other in ``counts``: the top 1% of a table's rows by count
        (``topk`` of ``max(1, rows // 100)``), its coverage and its out-of-range ids, as one table alone; tables of
        as many rows at once (``per_table``)."""
        sizes = [self.tables[t].num_embeddings for t in tables]
        start, index = self._starts[tables[0]], self._table_index[tables[0]]
        counts = self.counts[start:start + sum(sizes)]
        rows = segment_constants(tuple(sizes), counts.device)[1]
        total = per_table(counts, sizes, lambda b: b.sum(dim=1, dtype=torch.float64))
        coverage = per_table(counts > 0, sizes, lambda b: b.sum(dim=1, dtype=torch.float64)) / rows.clamp_min(1)
        top = per_table(counts, sizes, lambda b: torch.topk(b, max(1, b.shape[1] // 100), dim=1).values.sum(
            dim=1, dtype=torch.float64))
        share = torch.where(total > 0, top / total.clamp_min(1), torch.zeros_like(total))
        return torch.stack([coverage, share, self.out_of_range[index:index + len(tables)].double()], dim=1)


class TableHealth(pl.Callback):
    """Counts lookups every step; every N steps writes the table-health summaries of all ranks (module docstring).

    Args:
        every_n_steps: period in optimizer steps (0: no summaries; ``count`` may still keep the counts).
        count: keep the lookup counts (for the summaries, or for the Projector's rows).
    """

    def __init__(self, every_n_steps: int, count: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.count = count
        self.counts: LookupCounts | None = None
        self._pending: PendingWrite | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.count and self.counts is None:
            tables = [t for c in embedding_collections(pl_module).values() for t in c.tables]
            self.counts = LookupCounts(tables, pl_module.device)

    @torch.no_grad()
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute the numbers once, unlogged, before the first step: the first write of a run otherwise carries
        its kernels' first-use costs (CUDA loads a kernel's module lazily, at its first launch) into training."""
        if not self.every_n_steps or not trainer.logger:
            return
        if _ranks(trainer) > 1:
            merged_numbers(list(embedding_collections(pl_module).values()), self.counts, trainer.global_rank,
                           pl_module.device, HISTOGRAM_BINS)
        elif trainer.is_global_zero:
            self._local_numbers(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Batch, batch_idx: int) -> None:
        self._finish(trainer, wait=False)  # an earlier write whose numbers reached the host
        if self.counts is not None:
            self.counts.update(batch.sparse_features)
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or not trainer.logger:
            return
        if _ranks(trainer) > 1:
            self.write_merged(trainer, pl_module, step)  # every rank: collectives
        elif trainer.is_global_zero:
            self.write(trainer, pl_module, step)

    @torch.no_grad()
    def write_merged(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Every rank: the tables' numbers merged over the ranks (``table_health_ranks``); rank 0 writes them."""
        collections = list(embedding_collections(pl_module).values())
        found, numbers = merged_numbers(collections, self.counts, trainer.global_rank, pl_module.device,
                                        HISTOGRAM_BINS)
        if trainer.is_global_zero and found:
            self._hand_over(trainer, step, found, numbers)

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Write every table's health summaries at ``step`` (one process): all tables' numbers in one read."""
        found, numbers = self._local_numbers(pl_module)
        if found:
            self._hand_over(trainer, step, found, numbers)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._finish(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A failing run logs its pending write too where the device still answers; where it raises (a failed
        GPU) the write is dropped with a warning, so that Lightning's handling of the failure goes on."""
        step = self._pending[0] if self._pending else None
        try:
            self._finish(trainer)
        except RuntimeError as error:
            log.warning("table health: the summaries of step %s are lost: %s", step, error)

    def _hand_over(self, trainer: pl.Trainer, step: int, found: list[FoundTable], numbers: torch.Tensor) -> None:
        """Log the numbers of a write: at once where they are on the host (CPU); from a GPU once their asynchronous
        copy has arrived (``_finish``), after logging a still pending earlier write.

        Args:
            trainer: the trainer (its logger).
            step: the step the numbers were computed at (the step they are logged at).
            found: the tables written (``_local_numbers``).
            numbers: their ``_table_numbers`` one after another (any device).
        """
        self._finish(trainer)
        read = DeferredRead.start(numbers)
        if read.deferred:
            self._pending = (step, found, read)
        else:
            self._log(trainer, step, found, read.tolist())

    def _finish(self, trainer: pl.Trainer, wait: bool = True) -> None:
        """Log the pending write, if any: waiting for its copy, or (``wait=False``) only if it has arrived.

        Example:
            >>> health = TableHealth(every_n_steps=10)
            >>> health._finish(trainer=None, wait=False)  # nothing pending: nothing logged
        """
        if self._pending is None or not (wait or self._pending[2].ready()):
            return
        (step, found, read), self._pending = self._pending, None
        self._log(trainer, step, found, read.tolist())

    def _local_numbers(self, pl_module: pl.LightningModule) -> tuple[list[FoundTable], torch.Tensor]:
        """This process's tables (with their shapes and float state names) and their ``_table_numbers``, concatenated
        on the device (empty where no table has rows here). Tables stacked next to each other (a kernel group's)
        are computed together (``table_numbers.run_numbers``)."""
        found: list[FoundTable] = []
        numbers: list[torch.Tensor] = []
        for collection in embedding_collections(pl_module).values():
            weights, states = collection.state_dict(), collection.optimizer_state_dict()
            tables: list[tuple[TableConfig, torch.Tensor, dict[str, torch.Tensor]]] = []
            for table in collection.tables:
                weight = weights.get(f"{table.name}.weight")
                if weight is None or weight.dim() != 2 or not weight.numel():
                    continue  # no rows of it on this rank
                floats = {n: s for n, s in states.get(table.name, {}).items() if s.is_floating_point() and s.numel()}
                tables.append((table, weight, floats))
            runs = adjacent_runs([(w, *f.values()) for _, w, f in tables], keys=[tuple(f) for _, _, f in tables])
            for first, end, views in runs:
                run = tables[first:end]
                counted = self.counts.stats_matrix([t.name for t, _, _ in run]) if self.counts is not None else None
                numbers.append(run_numbers(views[0], [w.shape[0] for _, w, _ in run], views[1:], counted,
                                           HISTOGRAM_BINS))
                found.extend((t, tuple(w.shape), list(f)) for t, w, f in run)
        return found, torch.cat(numbers) if numbers else torch.zeros(0, dtype=torch.float64)

    def _log(self, trainer: pl.Trainer, step: int, found: list[tuple[TableConfig, tuple[int, ...], list[str]]],
             values: list[float]) -> None:
        """Log the tables' numbers (``_table_numbers`` vectors one after another) as scalars, histograms, text."""
        experiment = trainer.logger.experiment  # type: ignore[union-attr]
        scalars: dict[str, float] = {}
        lines = ["| table | rows | dim | coverage | top 1% share | out of range | row norm mean | max |",
                 "|---|---|---|---|---|---|---|---|"]
        at = 0
        for table, shape, state_names in found:
            norm, histogram = values[at:at + NORM_NUMBERS], values[at + NORM_NUMBERS:at + NORM_NUMBERS + HISTOGRAM_BINS]
            at += NORM_NUMBERS + HISTOGRAM_BINS
            stats = {"row_norm_mean": norm[0] / norm[2], "row_norm_max": norm[1]}
            for name in state_names:
                stats[f"{name}_mean"], stats[f"{name}_max"] = values[at], values[at + 1]
                at += 2
            if self.counts is not None:
                stats.update(zip(COUNT_STATS, values[at:at + len(COUNT_STATS)], strict=True))
                at += len(COUNT_STATS)
            if table.id_policy != IdPolicy.modulo:
                stats.pop("out_of_range", None)
            if hasattr(experiment, "add_histogram_raw"):
                _add_histogram(experiment, f"tables/{table.name}/row_norm", norm, histogram, step)
            scalars.update({f"tables/{table.name}/{k}": v for k, v in stats.items()})
            lines.append(f"| {table.name} | {shape[0]} | {shape[1]} | "
                         + " | ".join(_cell(stats.get(k)) for k in (*COUNT_STATS, "row_norm_mean", "row_norm_max"))
                         + " |")
        if hasattr(trainer.logger, "log_scalars"):  # RunLogger: all in one event
            trainer.logger.log_scalars(scalars, step=step)  # type: ignore[union-attr]
        else:
            trainer.logger.log_metrics(scalars, step=step)  # type: ignore[union-attr]
        if hasattr(experiment, "add_text"):
            experiment.add_text("tables/summary", "\n".join(lines), global_step=step)


NORM_NUMBERS = 5  # sum, max, count, min, sum of squares of a table's row norms


def _table_numbers(weight: torch.Tensor, states: list[torch.Tensor], counted: torch.Tensor | None) -> torch.Tensor:
    """One table's numbers as one float64 vector on the device: its row norms' sum, max, count, min and sum of
    squares, their ``HISTOGRAM_BINS`` bucket counts (even buckets from min to max), the mean and max of each
    optimizer state, then the lookup-count stats (``counted``). No host sync. Several tables stacked next to
    each other: ``table_numbers.run_numbers``."""
    return run_numbers(weight, [weight.shape[0]], states, None if counted is None else counted.view(1, -1),
                       HISTOGRAM_BINS)


def _add_histogram(experiment: Any, tag: str, norm: list[float], counts: list[float], step: int) -> None:
    """A TensorBoard histogram from the numbers of :func:`_table_numbers` (buckets named by their right edges)."""
    total, high, num, low, squares = norm
    width = max(high - low, 1e-12) / HISTOGRAM_BINS
    experiment.add_histogram_raw(tag, min=low, max=high, num=int(num), sum=total, sum_squares=squares,
                                 bucket_limits=[low + width * (i + 1) for i in range(HISTOGRAM_BINS)],
                                 bucket_counts=counts, global_step=step)


def _ranks(trainer: pl.Trainer) -> int:
    """The processes training together (1 without an initialized process group)."""
    return trainer.world_size if dist.is_available() and dist.is_initialized() else 1


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"

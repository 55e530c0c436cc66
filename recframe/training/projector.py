"""Embeddings in TensorBoard's Projector: the most looked-up rows of chosen tables, at the end of training.

For each table of ``logger.projector.tables``, rank 0 writes its ``logger.projector.rows`` most
looked-up rows (counted by ``table_health.LookupCounts`` on rank 0's batches) with ``add_embedding``:
``tensorboard/projector_config.pbtxt`` and, under ``tensorboard/<step>/<table>/``, ``tensors.tsv``
and ``metadata.tsv`` (columns ``id``: the row, the id after the data source's mapping, ``lookups``, and
``value`` where the data source can say what a row stands for (``row_labels(feature)``: the raw value of
a vocabulary row; MovieLens items: the movie id and title)).
The table must be whole on rank 0 (one process, or a table-wise or data-parallel table there).

Example:
    >>> top_rows(torch.tensor([0, 5, 2, 0, 9]), 2).tolist()
    [4, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from recframe.training.module import embedding_collections
from recframe.training.table_health import TableHealth

log = logging.getLogger("recframe")


def top_rows(counts: torch.Tensor, n: int) -> torch.Tensor:
    """The ids of the ``n`` most looked-up rows that were looked up at all, most first."""
    values, rows = torch.topk(counts, min(n, counts.numel()))
    return rows[values > 0]


class Projector(pl.Callback):
    """Writes the chosen tables' most looked-up rows to the Projector when training ends (module docstring).

    Args:
        health: the run's TableHealth callback (it keeps the lookup counts).
        tables: the tables to show.
        rows: rows per table.
    """

    def __init__(self, health: TableHealth, tables: Sequence[str], rows: int) -> None:
        self.health, self.tables, self.rows = health, list(tables), rows

    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = self.health.counts
        if not trainer.is_global_zero or trainer.logger is None or counts is None:
            return
        experiment = trainer.logger.experiment
        weights = {}
        for collection in embedding_collections(pl_module).values():
            weights.update(collection.state_dict())
        for table in self.tables:
            weight = weights.get(f"{table}.weight")
            if weight is None or weight.shape[0] != counts.tables[table].num_embeddings:
                log.warning("projector: table %s is not whole on rank 0 (sharded by rows or columns): not shown", table)
                continue
            table_counts = counts.of(table)
            rows = top_rows(table_counts, self.rows)
            if not rows.numel():
                continue
            metadata = [[str(r), str(c)] for r, c in zip(rows.tolist(), table_counts[rows].tolist(), strict=True)]
            header = ["id", "lookups"]
            labels = self._row_labels(trainer, counts.tables[table].feature_names[0])
            if labels:
                metadata = [[*line, labels.get(int(line[0]), "(missing)" if line[0] == "0" else "(other)")]
                            for line in metadata]
                header.append("value")
            experiment.add_embedding(weight[rows].float().cpu(), metadata=metadata, metadata_header=header,
                                     tag=table, global_step=trainer.global_step)

    @staticmethod
    def _row_labels(trainer: pl.Trainer, feature: str) -> dict[int, str]:
        """The data source's ``row_labels(feature)`` where it has one (else empty)."""
        source = getattr(getattr(trainer, "datamodule", None), "source", None)
        row_labels = getattr(source, "row_labels", None)
        return row_labels(feature) if row_labels is not None else {}

"""Lightning callbacks of a recframe run: throughput, the config in TensorBoard, the model's size, a progress bar
with the total of an endless stream (table health: ``table_health``; train AUC and the step's phases:
``train_scalars``; final curves: ``curves``; the Projector: ``projector``).

Example:
    >>> callbacks = [Throughput()]  # doctest: +SKIP
    >>> human(166_400_000), human(665_600_000, "B")
    ('166.4 M', '665.6 MB')
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from recframe.embedding.config import TableConfig
from recframe.embedding.kernels import DTYPES
from recframe.sparse import Batch
from recframe.training.module import dense_parameters, is_logging_step, log_host_scalars

log = logging.getLogger("recframe")


class Throughput(pl.Callback):
    """Logs ``perf/samples_per_s`` (all ranks together; also on the progress bar) and ``perf/step_ms``.

    Measured over a sliding window of steps, from the end of one training batch to the end of the
    next, so data loading, the step and logging are all included; logged at logging steps only.

    Args:
        window: number of steps in the window.
    """

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._ends: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Batch, batch_idx: int) -> None:
        self._ends.append((time.perf_counter(), batch.batch_size * trainer.world_size))
        if len(self._ends) < 2 or not is_logging_step(trainer):
            return
        elapsed = self._ends[-1][0] - self._ends[0][0]
        samples = sum(n for _, n in list(self._ends)[1:])
        steps = len(self._ends) - 1
        log_host_scalars(pl_module, {"perf/samples_per_s": samples / elapsed, "perf/step_ms": 1000.0 * elapsed / steps},
                         prog_bar=("perf/samples_per_s",))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ends.clear()  # validation time is not training throughput


class ConfigToTensorBoard(pl.Callback):
    """At the start of training (rank 0): the composed config as text and its scalars as hyperparameters.

    Args:
        config_yaml: the composed config.
        hyperparameters: flat ``{"optim.sparse.lr": 0.01, ...}`` of the config's scalars.
    """

    def __init__(self, config_yaml: str, hyperparameters: dict[str, Any]) -> None:
        self.config_yaml = config_yaml
        self.hyperparameters = hyperparameters

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.logger is None or not trainer.is_global_zero:
            return
        trainer.logger.log_hyperparams(self.hyperparameters)
        experiment = trainer.logger.experiment
        if hasattr(experiment, "add_text"):
            fenced = "\n".join("    " + line for line in self.config_yaml.splitlines())
            experiment.add_text("config", fenced, global_step=trainer.global_step)


def human(number: float, unit: str = "") -> str:
    """``166.4 M`` (a count) or ``665.6 MB`` (bytes, decimal prefixes)."""
    for prefix, scale in (("T", 1e12), ("G" if unit else "B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:.1f} {prefix}{unit}"
    return f"{number:.0f} {unit}".rstrip() if unit else f"{number:.0f}"


class ModelSize(pl.Callback):
    """Logs the model's size when fit starts (rank 0), tables included; Lightning's ModelSummary counts only
    ``nn.Parameter``s and so misses the tables (the kernels' buffers): ``499 K Total params`` for 167 M.

    Args:
        name: the model's name.
        tables: the model's whole tables (before sharding), ``recframe.config.resolve.table_configs``.
    """

    def __init__(self, name: str, tables: Sequence[TableConfig]) -> None:
        self.name = name
        self.tables = list(tables)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        table_params = sum(t.num_embeddings * t.embedding_dim for t in self.tables)
        table_bytes = sum(t.num_embeddings * t.embedding_dim * DTYPES[t.weight_dtype].itemsize for t in self.tables)
        dense = dense_parameters(getattr(pl_module, "model", None) or pl_module)
        dense_params = sum(p.numel() for p in dense)
        dense_bytes = sum(p.numel() * p.element_size() for p in dense)
        dtypes = "/".join(sorted({str(t.weight_dtype.value) for t in self.tables}))
        log.info("model %s: %s parameters (%s): %d tables %s (%s %s), dense %s (%s)", self.name,
                 human(table_params + dense_params), human(table_bytes + dense_bytes, "B"), len(self.tables),
                 human(table_params), human(table_bytes, "B"), dtypes, human(dense_params), human(dense_bytes, "B"))


class StepProgressBar(TQDMProgressBar):
    """Lightning's progress bar, on stderr (Lightning draws it on stdout, which then holds more than results);
    an endless training stream (synthetic data) shows ``trainer.max_steps`` as its total, so the bar has a total
    and an ETA (``37/300 [00:05<00:35]``) instead of ``37/?``.

    Args:
        refresh_rate: redraw every N steps.
    """

    def __init__(self, refresh_rate: int) -> None:
        super().__init__(refresh_rate=refresh_rate)

    def init_sanity_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):  # Lightning passes file=sys.stdout: the bars take stderr
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_test_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_test_tqdm()

    def init_predict_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        if math.isinf(total) and self.trainer.max_steps > 0:
            return self.trainer.max_steps
        return total

"""Lightning callbacks of a recframe run: throughput, per-table statistics, the config in TensorBoard.

Example:
    >>> callbacks = [Throughput(), TableStats(every_n_steps=200)]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch

from recframe.sparse import Batch
from recframe.training.module import embedding_collections, host_scalar, is_logging_step


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
        pl_module.log("perf/samples_per_s", host_scalar(samples / elapsed), prog_bar=True, batch_size=batch.batch_size)
        pl_module.log("perf/step_ms", host_scalar(1000.0 * elapsed / steps), batch_size=batch.batch_size)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ends.clear()  # validation time is not training throughput


class TableStats(pl.Callback):
    """Every N steps, on rank 0: each table's row-norm mean and max (``tables/<table>/row_norm_*``).

    Args:
        every_n_steps: period in optimizer steps; 0 disables.
    """

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Batch, batch_idx: int) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or not trainer.is_global_zero or trainer.logger is None:
            return
        stats: dict[str, float] = {}
        for collection in embedding_collections(pl_module).values():
            for key, weight in collection.state_dict().items():
                if key.endswith(".weight") and weight.dim() == 2 and weight.numel():
                    norms = weight.float().norm(dim=1)
                    table = key.removesuffix(".weight")
                    stats[f"tables/{table}/row_norm_mean"] = norms.mean().item()
                    stats[f"tables/{table}/row_norm_max"] = norms.max().item()
        trainer.logger.log_metrics(stats, step=step)


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

"""TensorBoard for comparing runs: one event file per run, its HPARAMS entry, sweep folders named by overrides.

- ``RunLogger``: Lightning's TensorBoardLogger closes its writer when ``fit`` ends, so the final
  validation and test of a run opened a second event file; this one keeps the file open until the
  job closes it (``close``), so a run is one event file.
- ``run_hparams`` + ``hparam_metrics``: at the end of a run, its hyperparameters (the knobs every
  run has: model, learning rates, dim, batch, sharding, backend, seed, and every key overridden on
  the command line) go to the HPARAMS tab with its final, best and test metrics
  (``hparams/<metric>``), so the runs of a sweep line up side by side.
- Sweep folders named by their overrides: ``recframe.training.run_names`` (no Lightning import: it
  runs before Hydra starts).

Example:
    >>> hparam_metrics({"val/auc": 0.75, "best/val/auc": 0.76, "global_step": 10, "val/ne": float("nan")})
    {'hparams/val/auc': 0.75, 'hparams/best/val/auc': 0.76}
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

KNOBS = ("model.name", "optim.sparse.name", "optim.sparse.lr", "optim.dense.name", "optim.dense.lr",
         "tables.embedding_dim", "tables.backend", "data.kind", "data.batch_size", "sharding.type", "trainer.devices",
         "trainer.precision", "seed")
METRIC_PREFIXES = ("val/", "best/", "test/")


class RunLogger(TensorBoardLogger):
    """A TensorBoardLogger whose event file stays open after ``fit`` (see the module docstring); ``close()`` ends it.

    Writing never waits for the disk inside training: Lightning calls ``save`` after every ``log_metrics``, and
    the parent's flushes the event file each time (~9 ms on the development VM, at every logging step and table
    health write); here ``save`` writes ``hparams.yaml`` once and the writer's own thread flushes the events every
    ``flush_secs`` (and ``finalize``/``close`` at the end). Its queue holds ``max_queue`` events, so a table-health
    write's ~200 scalars are queued, not handed over ten at a time.

    Args:
        args, kwargs: as TensorBoardLogger.
        max_queue: events the writer's queue holds before ``add_*`` waits for its thread.
        flush_secs: seconds between the writer thread's flushes (TensorBoard shows a run this late at most).
    """

    def __init__(self, *args: Any, max_queue: int = 1000, flush_secs: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, max_queue=max_queue, flush_secs=flush_secs, **kwargs)
        self._saved = False

    def save(self) -> None:
        if not self._saved:  # the parent's: a flush and hparams.yaml where missing
            super().save()
            self._saved = True

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()
        if status == "success":
            self.save()

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """``log_metrics`` of many Python floats as one event whose summary holds every value (TensorBoard reads
        each as an ``add_scalar`` of its tag and step): table health's ~200 scalars in one proto and one queue
        item, where ``add_scalar`` builds, converts (numpy) and queues each.

        Args:
            scalars: tag (without this logger's prefix) -> value.
            step: the global step.
        """
        from tensorboard.compat.proto.summary_pb2 import Summary

        prefix = f"{self._prefix}{self.LOGGER_JOIN_CHAR}" if self._prefix else ""
        values = [Summary.Value(tag=prefix + tag, simple_value=value) for tag, value in scalars.items()]
        self.experiment._get_file_writer().add_summary(Summary(value=values), step)

    def close(self) -> None:
        """Flush and close the event file (the end of the job)."""
        if self._experiment is not None:
            self._experiment.close()


def task_overrides() -> list[str]:
    """The command line's overrides of this Hydra job (empty outside one)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _scalar(value: Any) -> bool | int | float | str:
    return value if isinstance(value, bool | int | float | str) else str(value)


def run_hparams(cfg: DictConfig, overrides: list[str]) -> dict[str, bool | int | float | str]:
    """The run's hyperparameters for HPARAMS: ``KNOBS`` and every overridden key, at their resolved values.

    Args:
        cfg: the run config.
        overrides: ``key=value`` strings (``task_overrides()``); ``+``/``~`` prefixes and group choices allowed.
    """
    keys = list(KNOBS)
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if not key.startswith("hydra.") and key not in keys:
            keys.append(key)
    out: dict[str, bool | int | float | str] = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:  # a group choice (``sharding=row_wise``) or an unset key: the override's text
            text = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), None)
            if text is None:
                continue
            value = text
        elif OmegaConf.is_config(value):
            value = OmegaConf.to_yaml(value, resolve=True).strip() if key not in KNOBS else None
            if value is None:
                continue
        out[key] = _scalar(value)
    return out


def hparam_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The final, best and test metrics of a run (finite numbers) under ``hparams/``."""
    return {f"hparams/{k}": float(v) for k, v in metrics.items()
            if k.startswith(METRIC_PREFIXES) and isinstance(v, int | float) and math.isfinite(v)}

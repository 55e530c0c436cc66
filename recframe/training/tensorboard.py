"""TensorBoard for comparing runs: one event file per run, its HPARAMS entry, sweep folders named by overrides.

- ``RunLogger``: Lightning's TensorBoardLogger closes its writer when ``fit`` ends, so the final
  validation and test of a run opened a second event file; this one keeps the file open until the
  job closes it (``close``), so a run is one event file.
- ``run_hparams`` + ``hparam_metrics``: at the end of a run, its hyperparameters (the knobs every
  run has: model, learning rates, dim, batch, sharding, backend, seed, and every key overridden on
  the command line) go to the HPARAMS tab with its final, best and test metrics
  (``hparams/<metric>``), so the runs of a sweep line up side by side.
- ``short_run_name`` (the ``recframe_run_name`` resolver): a sweep job's folder name from Hydra's
  ``override_dirname``, each key shortened to its last part (``0_lr=0.05,embedding_dim=16``).

Example:
    >>> short_run_name("optim.sparse.lr=0.05,tables.embedding_dim=16")
    'lr=0.05,embedding_dim=16'
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
NAME_LIMIT = 120  # characters of a sweep job's folder name


class RunLogger(TensorBoardLogger):
    """A TensorBoardLogger whose event file stays open after ``fit`` (see the module docstring); ``close()`` ends it."""

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()
        if status == "success":
            self.save()

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


def short_run_name(override_dirname: str) -> str:
    """A folder name from Hydra's ``override_dirname``: keys shortened to their last part, ``/`` made ``_``."""
    items = []
    for item in override_dirname.split(","):
        key, _, value = item.partition("=")
        items.append(f"{key.lstrip('+~').rsplit('.', 1)[-1]}={value}" if value else key)
    name = ",".join(items).replace("/", "_").replace(" ", "")
    return name[:NAME_LIMIT] or "default"


def sweep_folder_overrides(args: list[str]) -> list[str]:
    """For a multirun (``-m``), the override that leaves the keys every job shares out of ``override_dirname``, so a
    job's folder is named by what it sweeps (``0_lr=0.01``); nothing otherwise, or when the user sets it.

    Example:
        >>> sweep_folder_overrides(["-m", "+experiment=dlrm", "optim.sparse.lr=0.01,0.05"])
        ["hydra.job.config.override_dirname.exclude_keys=['experiment']"]
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from recframe.config.compose import split_command_line

    overrides = split_command_line(args)[0]
    if not {"-m", "--multirun"} & set(args) or any("override_dirname" in o for o in overrides):
        return []
    parsed = OverridesParser.create().parse_overrides(overrides)
    shared = [p.key_or_group for p in parsed if not p.is_sweep_override() and not p.is_hydra_override()]
    return [f"hydra.job.config.override_dirname.exclude_keys=[{','.join(repr(k) for k in shared)}]"] if shared else []


def register_run_name_resolver() -> None:
    """``${recframe_run_name:${hydra.job.override_dirname}}`` in configs/train.yaml's sweep subdir."""
    if not OmegaConf.has_resolver("recframe_run_name"):
        OmegaConf.register_new_resolver("recframe_run_name", short_run_name)

"""The best validation of a run: early stopping, the best weights restored, the last and best metrics.

Every validation during training is recorded by ``BestValidation``: the last one and the best one by
``trainer.monitor`` (``auto``: ``val/auc``, or the first task's ``val/<task>/auc``, or ``val/recall@10``
for retrieval models). With ``trainer.restore_best`` the weights of the best validation are kept (a copy on
the host) and put back when training ends, so the final validation and ``metrics.json``'s ``val/*`` are
theirs; the checkpoints hold the weights of their own step (and the records, not the best weights: a run
resumed with ``restore_best`` keeps the best of its own validations). ``trainer.early_stopping_patience`` > 0 stops
training after that many validations without improvement (Lightning's ``EarlyStopping``).
``metrics.json`` gets ``best/<key>`` and ``last/<key>`` of the validations during training, with their
``best/global_step`` and ``last/global_step``.

Example:
    >>> from recframe.training.checks import compose_config
    >>> monitor_key(compose_config(["+experiment=deepfm"])), monitor_mode("val/logloss")
    ('val/click/auc', 'min')
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from recframe.config.resolve import tasks
from recframe.errors import RecframeError

LOWER_IS_BETTER = ("logloss", "ne", "loss")  # metric names (the last part of a key) that improve downwards


def monitor_key(cfg: DictConfig) -> str:
    """The validation key that ``trainer.monitor`` names (``auto``: the model's main metric).

    Args:
        cfg: the run config.
    """
    if cfg.trainer.monitor != "auto":
        return str(cfg.trainer.monitor)
    run_tasks = tasks(cfg)
    if not run_tasks:  # a retrieval model
        return "val/recall@10"
    return "val/auc" if len(run_tasks) == 1 else f"val/{run_tasks[0].name}/auc"


def monitor_mode(key: str) -> str:
    """``min`` for a metric that improves downwards (logloss, NE), else ``max``.

    Args:
        key: the monitored key.
    """
    return "min" if key.rsplit("/", 1)[-1] in LOWER_IS_BETTER else "max"


class BestValidation(pl.Callback):
    """Records the last and the best validation of training; restores the best weights at the end of fit.

    Args:
        monitor: the validation key that decides which is best.
        restore: keep the best weights (on the host) and load them back when training ends.

    Example:
        >>> best = BestValidation("val/auc", restore=True)
        >>> best.summary()  # nothing validated yet
        {}
    """

    def __init__(self, monitor: str, restore: bool) -> None:
        self.monitor, self.mode, self.restore = monitor, monitor_mode(monitor), restore
        self.last: tuple[int, dict[str, float]] | None = None
        self.best: tuple[int, dict[str, float]] | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None or math.isnan(self.best[1][self.monitor]):
            return True
        old = self.best[1][self.monitor]
        return value > old if self.mode == "max" else value < old

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.monitor not in metrics:
            raise RecframeError(f"trainer.monitor={self.monitor}: the validation has no such key; it has "
                                f"{sorted(metrics)}: set trainer.monitor to one of them (or auto)")
        self.last = (trainer.global_step, metrics)
        if self._better(metrics[self.monitor]):
            self.best = (trainer.global_step, metrics)
            if self.restore:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.restore and self.weights is not None:
            pl_module.load_state_dict(self.weights)

    def state_dict(self) -> dict[str, Any]:
        """The last and best validations (plain numbers: saved in checkpoints, so a resumed run continues them)."""
        return {"last": list(self.last) if self.last else None, "best": list(self.best) if self.best else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue a checkpoint's records. The best weights are not in checkpoints: with ``restore`` a resumed run
        keeps the best of the validations it makes itself."""
        last, best = state_dict["last"], state_dict["best"]
        self.last = (int(last[0]), {str(k): float(v) for k, v in last[1].items()}) if last else None
        if best and not self.restore:
            self.best = (int(best[0]), {str(k): float(v) for k, v in best[1].items()})

    def summary(self) -> dict[str, float]:
        """``best/<key>``, ``best/global_step``, ``last/<key>``, ``last/global_step`` (empty before a validation)."""
        out: dict[str, float] = {}
        for name, record in (("best", self.best), ("last", self.last)):
            if record is not None:
                out[f"{name}/global_step"] = record[0]
                out.update({f"{name}/{k}": v for k, v in record[1].items()})
        return out


def evaluation_callbacks(cfg: DictConfig) -> list[Any]:
    """The run's ``BestValidation`` and, with ``trainer.early_stopping_patience`` > 0, Lightning's EarlyStopping.

    Args:
        cfg: the run config.
    """
    from pytorch_lightning.callbacks import EarlyStopping

    key = monitor_key(cfg)
    out: list[Any] = [BestValidation(key, restore=cfg.trainer.restore_best)]
    if cfg.trainer.early_stopping_patience > 0:
        out.append(EarlyStopping(monitor=key, mode=monitor_mode(key), patience=cfg.trainer.early_stopping_patience,
                                 check_on_train_epoch_end=False, check_finite=False))
    return out

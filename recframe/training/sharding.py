"""Sharding a model inside a Lightning run: plan the tables, report the plan, replace the collections.

Called from ``RecModule.configure_model`` on every rank once the process group is up. The model
was built with its embedding collections on the meta device (no memory), so each rank then
allocates and initializes only its own shards.

Example:
    >>> shard = make_sharder(cfg, run_dir)  # doctest: +SKIP
    >>> model = shard(build_model(cfg, embedding_device="meta"), trainer)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from torch import nn

from recframe.embedding import EmbeddingBagCollection

log = logging.getLogger("recframe")


def model_tables(model: nn.Module) -> list:
    """Every table of every embedding collection of ``model`` (each collection once)."""
    collections = {id(m): m for m in model.modules() if isinstance(m, EmbeddingBagCollection)}
    return [t for m in collections.values() for t in m.tables]


def make_sharder(cfg: DictConfig, run_dir: Path) -> Callable[[nn.Module, pl.Trainer], nn.Module]:
    """A function that shards a model's embedding collections by the config's sharding plan.

    Args:
        cfg: the run config (``sharding``, ``tables``, ``data.batch_size``, ``trainer``).
        run_dir: where rank 0 writes ``sharding_plan.json``.
    """

    def shard(model: nn.Module, trainer: pl.Trainer) -> nn.Module:
        from recframe.distributed.qcomms import CommsPrecision
        from recframe.distributed.shard_model import shard_model
        from recframe.training.planning import make_plan

        local_world = trainer.num_devices
        plan, report = make_plan(cfg, trainer.world_size, local_world, tables=model_tables(model))
        if trainer.is_global_zero:
            log.info("sharding plan:\n%s", report.format())
            report.write_json(run_dir / "sharding_plan.json")
            if trainer.logger is not None and hasattr(trainer.logger.experiment, "add_text"):
                report.log_to_tensorboard(trainer.logger.experiment)
        comms = CommsPrecision(cfg.sharding.comms.forward_dtype, cfg.sharding.comms.backward_dtype)
        return shard_model(model, plan, device=trainer.strategy.root_device, local_world_size=local_world,
                           comms=comms)

    return shard

"""``recframe eval``: evaluate a checkpoint on the validation set, on any world size; write ``metrics.json``.

The checkpoint may come from any world size and sharding plan: it is read into this run's layout
(``recframe.training.checkpoint``). With the same experiment and validation data, the metrics do
not depend on the world size (the validation set is the same global set of samples).

Example:
    $ recframe eval +experiment=dlrm ckpt_path=outputs/run1/checkpoints/step-300
    $ recframe eval +experiment=dlrm ckpt_path=outputs/run1/checkpoints/step-300 trainer.devices=3 sharding=table_wise
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("recframe")


def eval_command(args: list[str]) -> int:
    """``recframe eval [overrides]`` (``ckpt_path=`` required)."""
    from recframe.training.hydra_main import run_hydra

    return run_hydra(args, eval_job, "recframe eval")


def eval_job(cfg: DictConfig) -> dict[str, float]:
    """Validate the checkpoint ``cfg.ckpt_path`` on the whole validation set; write and return the metrics."""
    import pytorch_lightning as pl

    from recframe.training.app import (
        _build_module,
        _check_plan,
        _use_torchrun_world,
        build_trainer,
        checkpoint_folder,
        checkpoints_root,
    )
    from recframe.training.builders import build_datamodule
    from recframe.training.checkpoint.folder import CheckpointReadError
    from recframe.training.checkpoint.safety import UnsafeCheckpointError
    from recframe.training.devices import check_devices
    from recframe.training.files import write_json_atomic

    if cfg.ckpt_path is None:
        print("recframe eval: ckpt_path is not set (give a checkpoint folder: ckpt_path=<run>/checkpoints/step-N)",
              file=sys.stderr)
        raise SystemExit(2)
    run_dir = Path(cfg.run_dir)
    _use_torchrun_world(cfg)
    check_devices(cfg)
    _check_plan(cfg)
    folder, step = checkpoint_folder(cfg.ckpt_path, checkpoints_root(cfg, run_dir), "recframe eval")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module, datamodule = _build_module(cfg), build_datamodule(cfg)
    trainer = build_trainer(cfg, run_dir, checkpoints=False)
    log.info("evaluating %s (step %d) on %d process(es)", folder, step, trainer.world_size)
    try:
        results = trainer.validate(module, datamodule=datamodule, ckpt_path=str(folder), verbose=False)[0]
    except (CheckpointReadError, UnsafeCheckpointError) as error:
        print(f"recframe eval: ckpt_path={cfg.ckpt_path}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    metrics = {k: float(v) for k, v in results.items()}
    metrics["global_step"] = step
    if trainer.is_global_zero:
        where = folder.resolve() if isinstance(folder, Path) else folder  # a URL stays as it is
        write_json_atomic(run_dir / "metrics.json", {**metrics, "checkpoint": str(where)})
        log.info("evaluation of %s: %s", folder, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    return metrics

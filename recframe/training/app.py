"""``recframe train`` and ``recframe bench``: Hydra entry points that build and run a Trainer.

Hydra composes the config once per job and recframe checks it (every problem at once, exit code 2,
nothing built: ``recframe.training.hydra_main``); then Hydra makes the run directory and calls the job below.

Run directory (``hydra.run.dir``, default ``outputs/<date>/<time>``): ``tensorboard/``,
``metrics.json`` (final validation over the whole validation set), ``checkpoints/step-N/``
(sharded checkpoints, ``recframe.training.checkpoint``), ``.hydra/`` (the composed config). Resume
a run exactly in its directory with ``recframe train <same args> hydra.run.dir=<run dir> ckpt_path=last``
(another number of processes loads too: the tables are resharded, but the data then differs).

Example:
    $ recframe train +experiment=dlrm trainer.max_steps=100
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recframe.storage import Location
from recframe.training.devices import check_devices
from recframe.training.hydra_main import run_hydra

log = logging.getLogger("recframe")


def train_command(args: list[str]) -> int:
    """``recframe train [overrides]``."""
    return run_hydra(args, train_job, "recframe train")


def bench_command(args: list[str]) -> int:
    """``recframe bench [overrides]``."""
    return run_hydra(args, bench_job, "recframe bench")


def plan_command(args: list[str]) -> int:
    """``recframe plan [overrides]``: print and save the sharding plan (recframe.training.plan_command)."""
    from recframe.training.plan_command import plan_job

    return run_hydra(args, plan_job, "recframe plan")


def _flat_scalars(cfg: DictConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list):
            flat[prefix[:-1]] = str(node) if len(str(node)) < 200 else f"[{len(node)} items]"
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def checkpoints_root(cfg: DictConfig, run_dir: Path) -> Location:
    """Where the run's ``step-N`` folders go: ``checkpoint.dir`` (a local path or an fsspec URL such as
    ``s3://bucket/run1/checkpoints``) or ``<run_dir>/checkpoints``."""
    from recframe import storage

    folder = cfg.checkpoint.get("dir")
    return storage.location(folder) if folder else run_dir / "checkpoints"


def checkpoint_folder(ckpt_path: str, root: Location, command: str) -> tuple[Location, int]:
    """The checkpoint folder that ``ckpt_path`` names, and its step; exit code 2 with the reason if unusable.

    ``last``: the newest complete ``step-N`` of ``root`` (the run's checkpoints folder, :func:`checkpoints_root`);
    newer unfinished ones (a process stopped while writing them) are passed over, saying so. Any other value:
    a ``step-N`` folder, a local path or an fsspec URL.
    """
    from recframe import storage
    from recframe.training.checkpoint.folder import find_last, read_manifest

    if ckpt_path == "last":
        last = find_last(root)
        for reason in last.skipped:
            log.warning("not resuming from it: %s", reason)
        if last.folder is None:
            print(f"{command}: ckpt_path=last: no complete checkpoint in {root} yet: pass the "
                  "run directory to resume with hydra.run.dir=<run dir>", file=sys.stderr)
            raise SystemExit(2)
        return last.folder, last.step
    folder = storage.location(ckpt_path)
    try:
        return folder, int(read_manifest(folder)["global_step"])
    except ValueError as error:
        print(f"{command}: ckpt_path={ckpt_path}: {error} (give a checkpoints/step-N folder)", file=sys.stderr)
        raise SystemExit(2) from None


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: list | None = None,
                  resume_step: int = 0, checkpoints: bool = True):  # noqa: ANN201 (pl.Trainer, imported lazily)
    """The Lightning Trainer of a run: logger, callbacks, atomic checkpoints."""
    import pytorch_lightning as pl
    import torch

    from recframe.config.resolve import log_period, stats_period, table_configs, tasks
    from recframe.training.callbacks import ConfigToTensorBoard, ModelSize, StepProgressBar, Throughput
    from recframe.training.checkpoint.callback import StepCheckpoint
    from recframe.training.checkpoint.plugin import DistributedCheckpointIO
    from recframe.training.curves import FinalCurves
    from recframe.training.keep_on_device import OneDeviceStrategy, one_device
    from recframe.training.projector import Projector
    from recframe.training.table_health import TableHealth
    from recframe.training.tensorboard import RunLogger
    from recframe.training.train_scalars import StepBreakdown, TrainAUC
    from recframe.vocab import MatmulPrecision

    t = cfg.trainer
    world = t.devices * t.num_nodes
    # float32 matmuls of the dense towers: full float32, TF32 ("high") or bf16 ("medium") on GPUs
    torch.set_float32_matmul_precision(MatmulPrecision(t.matmul_precision).value)
    projector = cfg.logger.projector
    every = stats_period(cfg.logger.table_stats_every_n_steps, t.max_steps)
    health = TableHealth(every, count=every > 0 or bool(projector.tables))
    callbacks: list[pl.Callback] = [Throughput(), StepBreakdown(), health,
                                    ModelSize(cfg.model.name, table_configs(cfg))]
    task_names = [t.name for t in tasks(cfg)]
    if task_names:  # one logit per task (not retrieval): train/auc of each logging window
        callbacks.append(TrainAUC(task_names))
    if t.enable_progress_bar:  # with a total and an ETA for endless synthetic data (trainer.max_steps)
        callbacks.append(StepProgressBar(t.progress_bar_refresh_steps))
    logger: Any = False
    if cfg.logger.tensorboard:
        # logger.dir: a local path or an fsspec URL (torch's SummaryWriter writes through tensorboard's gfile,
        # which reaches fsspec's filesystems)
        where = (cfg.logger.get("dir"), "") if cfg.logger.get("dir") else (str(run_dir), "tensorboard")
        logger = RunLogger(save_dir=where[0], name=where[1], version="", default_hp_metric=False,
                           purge_step=resume_step or None)
        callbacks.append(ConfigToTensorBoard(OmegaConf.to_yaml(cfg, resolve=True), _flat_scalars(cfg)))
        if projector.tables:
            callbacks.append(Projector(health, projector.tables, projector.rows))
        if cfg.logger.curves and task_names:
            callbacks.append(FinalCurves())
    # checkpoints/step-N every N steps, at the end and on SIGTERM (recframe.training.checkpoint.callback); without
    # checkpoints (the bench) it still owns SIGTERM, so both time the same step (no per-step flag broadcast).
    callbacks.append(StepCheckpoint(checkpoints_root(cfg, run_dir) if checkpoints else None,
                                    cfg.checkpoint.every_n_steps, cfg.checkpoint.sigterm_check_every_n_steps))
    # One checkpoint format for one process and many: DCP folders (recframe.training.checkpoint).
    checkpoint_io = DistributedCheckpointIO(cfg.checkpoint.keep_last, OmegaConf.to_yaml(cfg, resolve=True))
    # One process: Lightning's one-device strategy, leaving the model on its device when fit/validate end.
    strategy: Any = OneDeviceStrategy(device=one_device(t.accelerator))
    plugins: list[Any] = [checkpoint_io]
    if world > 1:
        from recframe.training.strategy import ShardedStrategy

        d = cfg.distributed
        strategy = ShardedStrategy(d.timeout_s, d.startup_timeout_s, d.watchdog,
                                   process_group_backend="gloo" if t.accelerator == "cpu" else "nccl")
        strategy.checkpoint_io, plugins = checkpoint_io, []  # it writes on every rank (ShardedStrategy)
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, precision=t.precision, strategy=strategy,
        max_steps=t.max_steps, max_epochs=t.max_epochs, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None if t.val_check_interval is not None else 1,
        limit_val_batches=t.limit_val_batches, log_every_n_steps=log_period(t.log_every_n_steps, t.max_steps),
        profiler=_profiler(t.profiler, run_dir),
        enable_progress_bar=t.enable_progress_bar, deterministic=t.deterministic,
        enable_model_summary=False,  # ModelSize logs the size, tables included
        num_sanity_val_steps=0, logger=logger, callbacks=[*callbacks, *(extra_callbacks or [])],
        # Validate under no_grad, not inference_mode: fbgemm's fused training kernels refuse inference tensors.
        inference_mode=False,
        enable_checkpointing=False, plugins=plugins, default_root_dir=str(run_dir),
    )


def _profiler(name: str, run_dir: Path):  # noqa: ANN202 (a Lightning Profiler or None, imported lazily)
    """Lightning's profiler ``trainer.profiler`` names, writing into ``<run_dir>/profile`` (None for ``none``)."""
    from recframe.vocab import Profiler

    kind = Profiler(name)
    if kind is Profiler.none:
        return None
    from pytorch_lightning import profilers

    folder = str(run_dir / "profile")
    if kind is Profiler.pytorch:  # a Chrome/Perfetto trace (*.pt.trace.json) of the profiled steps
        return profilers.PyTorchProfiler(dirpath=folder, filename="trace", export_to_chrome=True)
    cls = profilers.SimpleProfiler if kind is Profiler.simple else profilers.AdvancedProfiler
    return cls(dirpath=folder, filename="profile")


def _use_torchrun_world(cfg: DictConfig) -> None:
    """Under torchrun, the processes exist already: the trainer's devices and nodes follow them."""
    local, world = os.environ.get("LOCAL_WORLD_SIZE"), os.environ.get("WORLD_SIZE")
    if local is not None and world is not None and "TORCHELASTIC_RUN_ID" in os.environ:
        OmegaConf.set_struct(cfg, False)
        cfg.trainer.devices, cfg.trainer.num_nodes = int(local), int(world) // int(local)
        OmegaConf.set_struct(cfg, True)


def _check_plan(cfg: DictConfig) -> None:
    """Plan the sharding before any process starts: an impossible plan ends here, with exit code 2."""
    from recframe.distributed.planner.topology import PlanningError
    from recframe.training.builders import build_model
    from recframe.training.sharding import model_tables

    world = cfg.trainer.devices * cfg.trainer.num_nodes
    if world == 1:
        return
    from recframe.training.planning import make_plan

    try:
        make_plan(cfg, world, cfg.trainer.devices, tables=model_tables(build_model(cfg, embedding_device="meta")))
    except PlanningError as error:
        print(f"recframe: no sharding plan fits: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _build_module(cfg: DictConfig):  # noqa: ANN202 (RecModule, imported lazily)
    from recframe.training.builders import build_model, build_objective
    from recframe.training.module import RecModule
    from recframe.training.sharding import make_sharder

    if cfg.trainer.devices * cfg.trainer.num_nodes > 1:
        return RecModule(build_model=lambda: build_model(cfg, embedding_device="meta"),
                         objective=build_objective(cfg), optim=cfg.optim, seed=cfg.seed,
                         shard=make_sharder(cfg, Path(cfg.run_dir)), compile_dense=cfg.trainer.compile_dense,
                         cuda_graph=cfg.trainer.cuda_graph)
    return RecModule(build_model=lambda: build_model(cfg), objective=build_objective(cfg), optim=cfg.optim,
                     seed=cfg.seed, compile_dense=cfg.trainer.compile_dense, cuda_graph=cfg.trainer.cuda_graph)


def train_job(cfg: DictConfig) -> float | None:
    """Train, validate on the whole validation set, write ``metrics.json``; returns the main metric."""
    import pytorch_lightning as pl

    from recframe.training.best import evaluation_callbacks
    from recframe.training.builders import build_datamodule
    from recframe.training.checkpoint.folder import CheckpointReadError, set_aside_newer
    from recframe.training.checkpoint.safety import UnsafeCheckpointError
    from recframe.training.files import write_json_atomic
    from recframe.training.tensorboard import RunLogger, hparam_metrics, run_hparams, task_overrides

    run_dir = Path(cfg.run_dir)
    _use_torchrun_world(cfg)
    check_devices(cfg)  # trainer.accelerator=gpu without a GPU: one line, exit 2, before anything is built
    _check_plan(cfg)
    ckpt, resume_step = None, 0
    if cfg.ckpt_path is not None:
        folder, resume_step = checkpoint_folder(cfg.ckpt_path, checkpoints_root(cfg, run_dir), "recframe train")
        ckpt = str(folder)
        for moved in set_aside_newer(checkpoints_root(cfg, run_dir), resume_step):
            log.warning("resuming from step %d: set aside the abandoned run's newer checkpoint as %s",
                        resume_step, moved)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module, datamodule = _build_module(cfg), build_datamodule(cfg)
    best = evaluation_callbacks(cfg)  # the best and last validations; early stopping (recframe.training.best)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=best, resume_step=resume_step)
    log.info("run directory: %s%s", run_dir, f" (resuming from {ckpt}, step {resume_step})" if ckpt else "")
    try:  # any other RecframeError (data, a checkpoint write: exit 1) is reported by run_hydra
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    except (CheckpointReadError, UnsafeCheckpointError) as error:
        raise type(error)(f"ckpt_path={cfg.ckpt_path}: {error}") from None
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in results.items()}
    metrics["global_step"] = trainer.global_step
    metrics.update(best[0].summary())
    if datamodule.test_dataloader() is not None:  # data.test_path: evaluated once, with the weights kept
        metrics.update({k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()})
    data_report = datamodule.report()  # real data: rows read, malformed lines skipped per kind (data/skipped_<kind>)
    metrics.update(data_report)
    if trainer.is_global_zero:
        if data_report and trainer.logger:
            trainer.logger.log_metrics(data_report, step=trainer.global_step)
        if isinstance(trainer.logger, RunLogger):  # the HPARAMS tab: this run's knobs and overrides with its metrics
            trainer.logger.log_hyperparams(run_hparams(cfg, task_overrides()), metrics=hparam_metrics(metrics),
                                           step=trainer.global_step)
            trainer.logger.close()
        write_json_atomic(run_dir / "metrics.json", metrics)
        log.info("final validation: %s", json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    return metrics.get("val/auc", metrics.get("val/recall@10"))


def _wait_for(device: Any) -> None:
    """Wait until ``device`` (a torch.device) has run every kernel launched so far (nothing to wait for on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_job(cfg: DictConfig) -> None:
    """Run warmup + timed training steps through the real Trainer; print one JSON line.

    The steps log and write table health at the cadence of the run the config describes (``auto`` resolved
    from its ``trainer.max_steps``, not from the bench's few steps), so the time per step is that run's.
    """
    import pytorch_lightning as pl

    from recframe.config.resolve import log_period, stats_period
    from recframe.training.builders import build_datamodule

    class StepTimer(pl.Callback):
        """Times the steps after warmup, from the start of the first to the end of the last, waiting for the
        device at both ends: a GPU step launches its kernels without waiting for them, so the host can run
        many steps ahead of the GPU, and a clock read on the host alone would count launches, not work."""

        def __init__(self) -> None:
            self.start = self.end = 0.0
            self.warmup = int(cfg.bench.warmup_steps)  # read once: a DictConfig lookup costs tens of us a step

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.global_step == self.warmup:
                _wait_for(pl_module.device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.global_step >= trainer.max_steps:  # the last step
                _wait_for(pl_module.device)
            self.end = time.perf_counter()

    _use_torchrun_world(cfg)
    check_devices(cfg)
    _check_plan(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.trainer.log_every_n_steps = log_period(cfg.trainer.log_every_n_steps, cfg.trainer.max_steps)
    cfg.logger.table_stats_every_n_steps = stats_period(cfg.logger.table_stats_every_n_steps, cfg.trainer.max_steps)
    cfg.trainer.max_steps = cfg.bench.warmup_steps + cfg.bench.steps
    cfg.trainer.limit_val_batches = 0
    cfg.trainer.enable_progress_bar = False
    timer = StepTimer()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer = build_trainer(cfg, Path(cfg.run_dir), extra_callbacks=[timer], checkpoints=False)
    trainer.fit(_build_module(cfg), datamodule=build_datamodule(cfg))
    elapsed = timer.end - timer.start
    samples = cfg.bench.steps * cfg.data.batch_size * trainer.world_size
    if trainer.is_global_zero:
        print(json.dumps({"system": "recframe", "experiment": cfg.model.name, "world": trainer.world_size,
                          "device": str(trainer.strategy.root_device.type), "batch_per_rank": cfg.data.batch_size,
                          "steps": cfg.bench.steps, "samples_per_s": round(samples / elapsed, 1),
                          "step_ms": round(1000 * elapsed / cfg.bench.steps, 2),
                          "log_every_n_steps": int(cfg.trainer.log_every_n_steps),
                          "table_stats_every_n_steps": int(cfg.logger.table_stats_every_n_steps)}), flush=True)

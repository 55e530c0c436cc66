"""RecModule: the LightningModule that trains a recommendation model.

It owns the model (built in ``configure_model``, idempotently, so a sharding strategy can build
it its own way), the objective (loss and validation metrics), the dense optimizer and its LR
schedule. The embedding tables are not in the dense optimizer: their sparse optimizer is fused
into the backward pass, so ``loss.backward()`` already updated them.

On a GPU the step's forward, loss and backward can be one CUDA graph (``trainer.cuda_graph``,
``recframe.training.step_graph``); the module then steps its optimizer and schedule itself
(Lightning's manual optimization), after the replay.

What the run directory's TensorBoard gets from here: ``train/loss`` (and ``train/loss_<task>``
with several tasks), ``val/<metric>``, ``optim/lr_dense``, ``optim/lr_sparse`` (as ``optim.sparse_schedule`` sets it).

Example:
    >>> module = RecModule(build_model=lambda: my_model, objective=CTRObjective([Task("click")]),
    ...                    optim=OptimConfig())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from recframe.config.schema import OptimConfig
from recframe.embedding.protocol import EmbeddingModule
from recframe.sparse import Batch
from recframe.training.dense_optimizers import build_dense_optimizer
from recframe.training.objectives import Objective, training_loss
from recframe.training.schedule import build_scheduler
from recframe.training.sparse_lr import SparseLrSchedule
from recframe.training.step_graph import GraphedStep, graph_blockers
from recframe.training.step_scalars import StepScalars
from recframe.vocab import CudaGraph

log = logging.getLogger("recframe")

def host_scalar(value: float) -> torch.Tensor:
    """A Python number as a CPU tensor for ``self.log``.

    Lightning turns a logged float into a tensor on the module's device: a copy from pageable
    memory that waits for every queued GPU kernel, every step. A CPU tensor stays on the host.
    """
    return torch.tensor(float(value))


def is_logging_step(trainer: pl.Trainer) -> bool:
    """Whether the current training step writes its logged scalars (every ``trainer.log_every_n_steps``).

    The same test Lightning's own callbacks (LearningRateMonitor, ThroughputMonitor) make before logging.
    """
    return trainer._logger_connector.should_update_logs


def log_host_scalars(pl_module: pl.LightningModule, values: dict[str, float], prog_bar: tuple[str, ...] = ()) -> None:
    """Log host numbers at a logging step (``is_logging_step``), as ``self.log`` would, for less host time.

    ``self.log`` costs ~0.4 ms a call on the development VM (Lightning moves its result to the value's device
    through a recursive walk each time), at every logging step. A ``RecModule`` collects the values and writes
    them to the logger in one call at the end of the step (``RecModule.on_train_batch_end``): at the step and
    with the ``epoch`` that Lightning's own write would give them. Only the names in ``prog_bar`` go through
    ``self.log`` too, for the progress bar, and only where there is one. Another module: ``self.log``.

    Args:
        pl_module: the module being trained.
        values: ``{name: value}`` of this step.
        prog_bar: the names the progress bar shows.
    """
    if not isinstance(pl_module, RecModule):
        for name, value in values.items():
            pl_module.log(name, host_scalar(value), prog_bar=name in prog_bar, batch_size=1)
        return
    pl_module.logging_step_values.update(values)
    if prog_bar and pl_module.trainer.progress_bar_callback is not None:
        for name in prog_bar:
            pl_module.log(name, host_scalar(values[name]), prog_bar=True, logger=False)


def is_embedding_parameter(module: nn.Module) -> bool:
    """Whether a module's parameters are embedding tables (an ``EmbeddingModule``: updated by its fused optimizer)."""
    return isinstance(module, EmbeddingModule)


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's parameters outside embedding collections, each once."""
    embedding_ids = {
        id(p) for m in model.modules() if is_embedding_parameter(m) for p in m.parameters(recurse=True)
    }
    seen: set[int] = set()
    out = []
    for p in model.parameters():
        if id(p) not in embedding_ids and id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            out.append(p)
    return out


def compile_dense_modules(model: nn.Module) -> list[str]:
    """``torch.compile`` every direct child of the model that is not an embedding collection, in place.

    The towers, the interaction and the head run as fused kernels (their forward and backward); the
    embedding lookups (our own kernels, sharded or not) and the loss stay eager. Returns the names
    of the compiled children.

    Example:
        >>> compile_dense_modules(nn.Sequential(nn.Linear(2, 2)))  # doctest: +SKIP
        ['0']
    """
    compiled = []
    for name, child in model.named_children():
        if not is_embedding_parameter(child):
            child.compile()
            compiled.append(name)
    return compiled


def embedding_collections(model: nn.Module) -> dict[str, nn.Module]:
    """The embedding collections of a model, by module path."""
    return {name: m for name, m in model.named_modules() if is_embedding_parameter(m)}


class RecModule(pl.LightningModule):
    """Model + objective + dense optimizer, for Lightning.

    Randomness inside a step (dropout) is seeded from ``(seed, global step)`` at the start of every
    step, so a resumed run draws exactly what an uninterrupted one would.

    Args:
        build_model: returns the model (a plain nn.Module taking a Batch); called once, in ``configure_model``.
        objective: the loss and validation metrics.
        optim: the dense optimizer, LR schedule and the sparse optimizer's lr (logged).
        seed: base of the per-step seeds.
        shard: shards the built model's embedding collections (given the model and the trainer),
            or None to train them unsharded (one process).
        compile_dense: ``torch.compile`` the model's dense parts (``compile_dense_modules``).
        cuda_graph: train each step from one CUDA graph: ``auto`` where nothing rules it out
            (``step_graph.graph_blockers``), ``on`` (an error where something does), ``off``.
    """

    def __init__(self, build_model: Callable[[], nn.Module], objective: Objective, optim: OptimConfig,
                 seed: int = 0, shard: Callable[[nn.Module, pl.Trainer], nn.Module] | None = None,
                 compile_dense: bool = False, cuda_graph: CudaGraph | str = CudaGraph.off) -> None:
        super().__init__()
        self.compile_dense = compile_dense
        self.cuda_graph = CudaGraph(cuda_graph)
        self.graphed_step: GraphedStep | None = None
        self._build_model = build_model
        self._shard = shard
        self.seed = seed
        self.objective = objective
        self.optim = optim
        self.model: nn.Module | None = None
        self.val_metrics = objective.make_metrics()
        self.step_scalars = StepScalars()
        self.logging_step_values: dict[str, float] = {}  # log_host_scalars: written at the end of the step
        self.sparse_lr: SparseLrSchedule | None = None  # optim.sparse_schedule, set up in configure_model

    def configure_model(self) -> None:
        if self.model is None:
            model = self._build_model()
            self.model = self._shard(model, self.trainer) if self._shard is not None else model
            if self.compile_dense:
                compile_dense_modules(self.model)
            self.graphed_step = self._graphed_step()
            self.sparse_lr = SparseLrSchedule(embedding_collections(self.model).values(), self.optim.sparse_schedule)

    def _graphed_step(self) -> GraphedStep | None:
        """The step's CUDA graph where ``cuda_graph`` asks for one and nothing rules it out (else None)."""
        if self.cuda_graph is CudaGraph.off or self._trainer is None:
            return None
        trainer = self.trainer
        device = trainer.strategy.root_device
        blockers = graph_blockers(self.model, device, trainer.world_size, str(trainer.precision))
        if blockers:
            if self.cuda_graph is CudaGraph.on:
                raise ValueError("trainer.cuda_graph=on, but the training step cannot be a CUDA graph: "
                                 + "; ".join(blockers) + ". Set trainer.cuda_graph=auto (or off).")
            if device.type == "cuda":
                log.info("training step: eager, no CUDA graph (%s)", "; ".join(blockers))
            return None
        self.automatic_optimization = False  # the replay does the backward; training_step steps the optimizer
        return GraphedStep(lambda batch: training_loss(self.model, batch), dense_parameters(self.model), self.model)

    def forward(self, batch: Batch) -> torch.Tensor:
        assert self.model is not None, "configure_model() has not run"
        return self.model(batch)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        # The step's random numbers (dropout) from its seed: resumed runs repeat them. The CPU's and the training
        # GPU's generators only: torch.manual_seed also queues the seeds of devices not started (xpu, mtia), each
        # with a captured stack, ~50-80 us a step of host time.
        step_seed = self.seed * 1_000_003 + self.global_step
        torch.default_generator.manual_seed(step_seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(step_seed)
        if self.sparse_lr is not None:
            self.sparse_lr.step(self.global_step)  # the lr this step's fused update uses

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        assert self.model is not None
        if self.graphed_step is None:
            total, parts = training_loss(self.model, batch)  # Lightning runs the backward and optimizer step
        else:
            total, parts = self.graphed_step(batch)  # forward, loss, backward: the gradients are in .grad
            self.optimizers().step()  # type: ignore[union-attr]  # (one optimizer)
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()  # type: ignore[union-attr]
        # The losses stay on the device; a logging step's window mean reaches TensorBoard (at that step)
        # and the progress bar once it arrived on the host: no step waits for the GPU (StepScalars).
        self.step_scalars.add({"train/loss": total, **{f"train/loss_{name}": v for name, v in parts.items()}})
        if is_logging_step(self.trainer):
            self.step_scalars.close(self.global_step)
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                log_host_scalars(self, {"optim/lr_dense": float(scheduler.get_last_lr()[0])})
            lr_sparse = self.sparse_lr.lr if self.sparse_lr is not None else None
            lr_sparse = self.optim.sparse.lr if lr_sparse is None else lr_sparse
            log_host_scalars(self, {"optim/lr_sparse": float(lr_sparse)})
        self._write_step_scalars(wait=False)
        return total

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """Write the step's ``log_host_scalars`` values (the callbacks' too: Lightning calls them first) in one call,
        at the step and with the ``epoch`` key of Lightning's write of ``self.log``'s values."""
        if not self.logging_step_values:
            return
        values, self.logging_step_values = self.logging_step_values, {}
        if self.logger is not None:
            self.logger.log_metrics({**values, "epoch": self.current_epoch},
                                    step=self.trainer.fit_loop.epoch_loop._batches_that_stepped)

    def on_train_end(self) -> None:
        self._write_step_scalars(wait=True)

    def _write_step_scalars(self, wait: bool) -> None:
        """Hand the windows whose means reached the host to TensorBoard (at their step) and the progress bar."""
        for step, values in self.step_scalars.ready(wait=wait):
            if self.logger is not None:
                self.logger.log_metrics(values, step=step)
            if not wait and self.trainer.progress_bar_callback is not None:  # (it takes values inside a step only)
                self.log("train/loss", host_scalar(values["train/loss"]), prog_bar=True, logger=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the dense gradients' norm to ``optim.gradient_clip_val`` (after 16-bit loss unscaling; no host sync)."""
        if self.optim.gradient_clip_val is not None:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.optim.gradient_clip_val)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        assert self.model is not None
        self.objective.update_metrics(self.model, batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """A test batch (``data.test_path``, evaluated once after training): the validation metrics, as ``test/*``."""
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, prefix: str) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        for name, value in values.items():
            # Every rank holds the same synced value (torchmetrics gathered the whole validation set).
            self.log(f"{prefix}/{name}", value.float(), prog_bar=name in ("auc", "recall@10"), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        assert self.model is not None
        optimizer = build_dense_optimizer(dense_parameters(self.model), self.optim, self.device)
        scheduler = build_scheduler(optimizer, self.optim.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- what Lightning's checkpoint does not hold by itself -----------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        assert self.model is not None
        checkpoint["sparse_optimizer"] = {
            path: ebc.optimizer_state_dict() for path, ebc in embedding_collections(self.model).items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.configure_model()
        assert self.model is not None
        collections = embedding_collections(self.model)
        saved = checkpoint["sparse_optimizer"]
        if set(saved) != set(collections):
            raise RuntimeError(f"checkpoint has sparse optimizer state for {sorted(saved)} but the model's "
                               f"embedding collections are {sorted(collections)}")
        for path, ebc in collections.items():
            ebc.load_optimizer_state_dict(saved[path])

"""When checkpoints are written: every N steps, at the end of training, and on SIGTERM.

``StepCheckpoint`` saves ``checkpoints/step-N`` through ``trainer.save_checkpoint`` (on every rank:
the save is collective, see ``recframe.training.checkpoint``).
The last step of a run that ends at ``trainer.max_steps`` is saved after its batch, inside the epoch,
so that resuming it with a larger ``max_steps`` trains on; a run that ends otherwise (its epochs,
early stopping) is saved at the end of training.

SIGTERM (a scheduler's preemption, ``kill``, ``docker stop``): the handler only sets a flag. One
process acts at the next step boundary. With several ranks, every ``sigterm_check_every_n_steps``
steps (``checkpoint.sigterm_check_every_n_steps``, default 10) the ranks tell each other whether
any got the signal (a one-element all-reduce on the group's device; the ``.item()`` waits for the
GPU, so it is not done every step), all at the same global step; SIGTERM is therefore acted on up
to that many steps later (at most ``sigterm_check_every_n_steps`` step times: keep it well below
the scheduler's grace period). Then all of them write a final checkpoint and leave with exit code 143
(128 + SIGTERM, what a shell reports for a process killed by SIGTERM, so schedulers see a
termination, not a success). Lightning's own SIGTERM handler is replaced for the duration of
training: it broadcasts from inside the signal handler (a collective that the other ranks are not
in, which can deadlock when a rank other than 0 gets the signal), forwards the signal, and ends
with exit code 0 without a checkpoint. So is Lightning's exchange of its flag at the start of every
training step (a broadcast from rank 0 and an ``.item()``: with several GPUs a collective and a host
synchronization every step): only its own handler sets that flag, so while ours is installed the
broadcast could only ever say "no". With ``root=None`` (``recframe bench``) nothing is saved; SIGTERM
still stops every rank at the same step with exit code 143.

Example:
    >>> trainer = pl.Trainer(callbacks=[StepCheckpoint(Path("run/checkpoints"), every_n_steps=100)])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from recframe import storage
from recframe.storage import Location

log = logging.getLogger("recframe")

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
# Lightning's training epoch loop method that broadcasts its SIGTERM flag every step (pytorch-lightning 2.6)
LIGHTNING_SIGTERM_EXCHANGE = "_broadcast_sigterm_tensor"


def _no_exchange() -> None:
    """Stands for Lightning's per-step SIGTERM broadcast while ``StepCheckpoint``'s handler is installed."""


class Terminated(SystemExit):
    """Raised on every rank after the final checkpoint of a SIGTERM; the process exits with code 143."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT_CODE)


class StepCheckpoint(pl.Callback):
    """Save ``root/step-<global step>`` every ``every_n_steps`` steps, at the end of training, and on SIGTERM.

    Args:
        root: the run's ``checkpoints/`` folder (a local path or an fsspec URL); None: write none (SIGTERM is
            still handled).
        every_n_steps: period in optimizer steps (0: only at the end and on SIGTERM).
        sigterm_check_every_n_steps: with several ranks, the period (global steps) of the exchange of
            SIGTERM flags; a SIGTERM is acted on at the next such step.
    """

    def __init__(self, root: Location | None, every_n_steps: int, sigterm_check_every_n_steps: int = 10) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if sigterm_check_every_n_steps < 1:
            raise ValueError(f"sigterm_check_every_n_steps must be >= 1, got {sigterm_check_every_n_steps}")
        self.sigterm_check_every_n_steps = sigterm_check_every_n_steps
        self.root = root
        self.every_n_steps = every_n_steps
        self.terminate_requested = False
        self._saved_step = -1
        self._previous_handler: Any = None
        self._quieted_loop: Any = None  # Lightning's epoch loop whose per-step SIGTERM broadcast is switched off

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.terminate_requested = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        loop = trainer.fit_loop.epoch_loop
        if hasattr(loop, LIGHTNING_SIGTERM_EXCHANGE):  # its flag stays False while our handler is installed
            setattr(loop, LIGHTNING_SIGTERM_EXCHANGE, _no_exchange)
            self._quieted_loop = loop

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)
        self._restore_handler()
        if self._any_rank_terminating(trainer):
            raise Terminated()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
        if self._quieted_loop is not None:
            vars(self._quieted_loop).pop(LIGHTNING_SIGTERM_EXCHANGE, None)  # the class's method again
            self._quieted_loop = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        terminating = self._terminating_at(trainer, step)
        # The last step (max_steps) is saved here, inside the epoch, like every periodic checkpoint: saved in
        # on_train_end, Lightning's loops would record the epoch as finished, and a resume with a larger
        # trainer.max_steps would stop at once ("max_epochs=1 reached") instead of training on.
        last = step == trainer.max_steps
        if terminating or last or (self.every_n_steps and step % self.every_n_steps == 0):
            self.save(trainer)
        if terminating:
            log.warning("SIGTERM: wrote the checkpoint of step %d; stopping with exit code %d", step,
                        SIGTERM_EXIT_CODE)
            self._restore_handler()
            raise Terminated()

    def _terminating_at(self, trainer: pl.Trainer, step: int) -> bool:
        """Whether to stop at this step: this process's flag alone, or every N steps all ranks' flags."""
        if trainer.world_size == 1 or not dist.is_initialized():
            return self.terminate_requested
        return step % self.sigterm_check_every_n_steps == 0 and self._any_rank_terminating(trainer)

    def _any_rank_terminating(self, trainer: pl.Trainer) -> bool:
        if trainer.world_size == 1 or not dist.is_initialized():
            return self.terminate_requested
        flag = torch.tensor([int(self.terminate_requested)], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def save(self, trainer: pl.Trainer) -> None:
        """Save the current step (once per step), on every rank; nothing without a root."""
        if self.root is None or trainer.global_step == self._saved_step:
            return
        # weights_only=False: the whole training state (optimizers, loops), not only the model's weights
        folder = storage.join(self.root, f"step-{trainer.global_step}")
        trainer.save_checkpoint(folder, weights_only=False)
        self._saved_step = trainer.global_step
        if trainer.is_global_zero:
            log.info("checkpoint: %s", folder)

"""ShardedStrategy: Lightning's DDP for the dense towers, model parallelism for the embedding tables.

The embedding collections are sharded over the ranks by ``RecModule.configure_model`` (Lightning
calls it once the process group is up). This strategy then wraps the model in DDP with every
embedding parameter and buffer ignored: DDP all-reduces only the dense gradients, and it does not
broadcast rank 0's table shards over the other ranks' (which hold different rows). The tables are
updated by their fused optimizers inside the backward pass, through the sharded modules' own
collectives. The pipelined step (``recframe.training.pipeline``) is attached here: with
``trainer.pipeline`` each next training batch's input all-to-all starts under the current step.

Listening sockets: on one machine the rendezvous store, gloo's (or NCCL's) connections and the
watchdog listen on loopback only (``recframe.distributed.rendezvous``); across machines on the
configured ``MASTER_ADDR``; watchdog peers prove they belong to the run with a per-run token.

Failures: the ranks wait ``distributed.startup_timeout_s`` for each other to start (process
startup, CUDA initialization), then every collective gets ``distributed.timeout_s`` (gloo's and
Lightning's default is 30 minutes); once the process group is up a ``PeerWatchdog``
(recframe.distributed.watchdog) watches every peer: a rank that dies or stops makes the others
log ``rank R lost (...); stopping`` and exit with status 1, rank 0 killing the ranks Lightning
launched. A collective that fails in the training loop ends the same way (``on_exception``);
Ctrl-C tells the peers it was an interrupt; an exit every rank takes together (``SystemExit``,
SIGTERM's 143, and the checkpoint errors, which ``checkpoint`` raises on every rank at once) says
goodbye; any other error leaves without one, so the peers stop too once this process is gone.

Example:
    >>> strategy = ShardedStrategy(timeout_s=300.0, startup_timeout_s=900.0, watchdog=True,
    ...                            process_group_backend="gloo")  # doctest: +SKIP
    >>> trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from recframe.distributed.rendezvous import loopback_interface, run_store
from recframe.distributed.watchdog import (
    PeerWatchdog,
    RanksDidNotStart,
    describe_failure,
    exit_now,
    is_collective_failure,
    start_watchdog,
)
from recframe.errors import RecframeError
from recframe.training.checkpoint.folder import CheckpointReadError, CheckpointWriteError
from recframe.training.checkpoint.layout import ModelLayout
from recframe.training.checkpoint.plugin import DistributedCheckpointIO
from recframe.training.checkpoint.safety import UnsafeCheckpointError
from recframe.training.keep_on_device import KeepOnDevice
from recframe.training.module import embedding_collections
from recframe.training.pipeline import attach_input_pipeline, drop_started_input_dists

# Exits every rank takes at the same point: this rank says goodbye, so its peers do not call it lost. A user's
# error (RecframeError: the data, the config, a checkpoint) is found by every rank alike: each reports it.
AGREED_EXITS = (SystemExit, RecframeError, CheckpointWriteError, CheckpointReadError, UnsafeCheckpointError)


def embedding_state_names(model: nn.Module) -> list[str]:
    """Fully qualified names of every parameter and buffer inside an embedding collection."""
    names: list[str] = []
    for path, collection in embedding_collections(model).items():
        prefix = f"{path}." if path else ""
        names += [prefix + n for n, _ in collection.named_parameters()]
        names += [prefix + n for n, _ in collection.named_buffers()]
    return names


class ShardedStrategy(KeepOnDevice, DDPStrategy):
    """DDP over the dense parameters only; the sharded embedding collections are left to themselves. The model
    stays on its device when a fit or validate ends (``KeepOnDevice``).

    Args:
        timeout_s: timeout of every collective, and silence after which a peer is lost (seconds).
        startup_timeout_s: how long the ranks wait for each other when the process group starts (seconds).
        watchdog: watch the peers (heartbeats on connections of its own) to stop soon after one is lost.
        process_group_backend: ``gloo`` (CPU) or ``nccl`` (GPU).
    """

    strategy_name = "recframe_sharded"

    def __init__(self, timeout_s: float, startup_timeout_s: float, watchdog: bool, process_group_backend: str) -> None:
        super().__init__(process_group_backend=process_group_backend, timeout=timedelta(seconds=startup_timeout_s))
        self.timeout_s, self.watch = timeout_s, watchdog
        self.watchdog: PeerWatchdog | None = None

    def setup_distributed(self) -> None:
        if "TORCHELASTIC_RUN_ID" in os.environ or dist.is_initialized():
            super().setup_distributed()  # torchrun's own store (torchrun's --master-addr decides where it listens)
        else:  # DDPStrategy.setup_distributed, with a store that listens on loopback only on one machine
            from lightning_fabric.utilities.distributed import _init_dist_connection
            from lightning_fabric.utilities.seed import reset_seed

            reset_seed()
            self.set_world_ranks()
            self._process_group_backend = self._get_process_group_backend()
            env = self.cluster_environment
            assert env is not None
            if self.num_nodes == 1 and (interface := loopback_interface()) is not None:
                os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)  # gloo's and NCCL's pairs: loopback too
                os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
            try:
                store = run_store(self.global_rank, self.world_size, env.main_address, env.main_port,
                                  single_node=self.num_nodes == 1, timeout=self._timeout)
                device = self.root_device if self.root_device.type != "cpu" else None
                _init_dist_connection(env, self._process_group_backend, timeout=self._timeout, store=store,
                                      device_id=device)
            except dist.DistError as error:  # a rank not there in time (gloo's pair connections say only a key)
                raise RanksDidNotStart(str(error)) from error
        # The rendezvous waited up to startup_timeout_s (ranks start at different times); collectives get timeout_s.
        dist.distributed_c10d._set_pg_timeout(timedelta(seconds=self.timeout_s))
        if self.watch and self.watchdog is None:
            self.watchdog = start_watchdog(self.timeout_s, on_lost=self._stop, single_node=self.num_nodes == 1)

    def setup(self, trainer: pl.Trainer) -> None:
        super().setup(trainer)
        attach_input_pipeline(self.lightning_module.model, trainer.datamodule)

    def on_train_end(self) -> None:
        super().on_train_end()
        drop_started_input_dists(self.lightning_module.model)

    def _stop(self, message: str) -> None:
        exit_now(message, children=list(getattr(self.launcher, "procs", ())))

    def on_exception(self, exception: BaseException) -> None:
        super().on_exception(exception)
        if self.watchdog is not None and not isinstance(exception, AGREED_EXITS):
            if isinstance(exception, KeyboardInterrupt):
                self.watchdog.interrupted_here()  # Ctrl-C: the peers stop without calling this rank lost
            else:
                self.watchdog.mark_failed()  # leave without a goodbye (an agreed exit says one)
        if is_collective_failure(exception):
            self._stop(self.watchdog.explain(exception, wait_s=3.0) if self.watchdog is not None
                       else describe_failure(exception, self.global_rank, self.timeout_s))

    def _setup_model(self, model: nn.Module) -> DistributedDataParallel:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, embedding_state_names(model))
        return super()._setup_model(model)

    # ---- checkpoints: every rank writes its own table shards ----------------------------------------
    # DDPStrategy writes on rank 0 only; here the checkpoint I/O (a DistributedCheckpointIO, set as
    # ``strategy.checkpoint_io``) runs on every rank with this rank's table layout, and loads into the
    # current layout whatever world size and plan wrote the checkpoint.
    def _layout(self) -> ModelLayout:
        return ModelLayout.of(self.lightning_module.model, prefix="model.", rank=self.global_rank)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"ShardedStrategy.save_checkpoint takes no storage_options, got {storage_options!r}")
        self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=self._layout())

    def load_checkpoint(self, checkpoint_path: str | os.PathLike, weights_only: bool | None = None) -> dict[str, Any]:
        io = self.checkpoint_io
        if not isinstance(io, DistributedCheckpointIO):
            raise TypeError(f"ShardedStrategy loads sharded checkpoints through DistributedCheckpointIO, "
                            f"not {type(io).__name__}")
        return io.load_checkpoint(checkpoint_path, layout=self._layout())

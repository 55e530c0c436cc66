"""``DistributedCheckpointIO``: Lightning's checkpoint I/O plugin, through ``writer.save`` and ``reader.load``.

One plugin for one process and many: a single-process Trainer takes it in ``plugins``,
``ShardedStrategy`` takes it as its ``checkpoint_io`` and passes each rank's table layout.

Example:
    >>> io = DistributedCheckpointIO(keep_last=2)
    >>> trainer = pl.Trainer(plugins=[io], ...)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from lightning_fabric.plugins import CheckpointIO

from recframe import storage
from recframe.training.checkpoint.folder import STEP_FOLDER
from recframe.training.checkpoint.layout import ModelLayout
from recframe.training.checkpoint.reader import load
from recframe.training.checkpoint.rng import restore_rng
from recframe.training.checkpoint.writer import save


class DistributedCheckpointIO(CheckpointIO):
    """Lightning's checkpoint I/O through :func:`~recframe.training.checkpoint.writer.save` and
    :func:`~recframe.training.checkpoint.reader.load` (see the package docstring).

    ``save_checkpoint`` is collective: a strategy must call it on every rank (``ShardedStrategy``
    does; Lightning's single-device strategy has only one). ``path`` is the ``step-N`` folder, a local path or
    an fsspec URL (``recframe.storage``).

    Args:
        keep_last: complete checkpoints to keep.
        config_text: the run's composed config (YAML), stored in each checkpoint.
    """

    def __init__(self, keep_last: int = 2, config_text: str | None = None) -> None:
        self.keep_last = keep_last
        self.config_text = config_text

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: ModelLayout | None = None) -> None:
        """Save; ``storage_options``: this rank's table layout (None when nothing is sharded)."""
        folder = storage.location(path)
        step = int(storage.name(folder).removeprefix("step-"))
        save(checkpoint, storage.parent(folder), step, storage_options, self.keep_last, self.config_text)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None, layout: ModelLayout | None = None) -> dict[str, Any]:
        """Load into this rank's ``layout`` (None: whole tensors). ``map_location``: tensors stay on the CPU."""
        checkpoint, _ = load(storage.location(path), layout)
        if "rng" in checkpoint:
            restore_rng(checkpoint.pop("rng"))
        return checkpoint

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Delete a checkpoint folder (only one named like recframe's own ``step-N``)."""
        folder = storage.location(path)
        if not STEP_FOLDER.match(storage.name(folder)):
            raise ValueError(f"{folder} is not a recframe checkpoint folder (step-N): not removed")
        storage.rmtree(folder)

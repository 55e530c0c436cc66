"""The pipelined training step with several ranks: batch i+1's input all-to-all travels under batch i.

The data module's prefetcher (``recframe.data.prefetch.DevicePrefetcher``) materializes the next
training batch on the device while the current one is trained on, and calls the callback registered
with ``RecDataModule.on_train_batch_ready`` on it. ``attach_input_pipeline`` registers one that
starts that batch's input dist on every ``ShardedEmbeddingBagCollection`` of the model
(``prefetch``); the step's forward then only waits for its ids. Validation batches never reach the
callback. The on/off switch is the data module's ``pipeline`` (``trainer.pipeline``); the strategy
attaches the callback only when there are several ranks (``recframe.training.strategy``).
Lightning's fetcher asks for one batch ahead itself, so the started input dist is two batches ahead
of the step; each collection keeps at most ``MAX_PREFETCHED`` and ``drop_started_input_dists``
finishes the ones never trained on (at the end of training). The order of collectives that keeps
the ranks in step is argued in ``ShardedEmbeddingBagCollection.prefetch``.

Example:
    >>> attach_input_pipeline(module.model, trainer.datamodule)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from recframe.distributed.sharded import ShardedEmbeddingBagCollection
from recframe.sparse import Batch
from recframe.training.datamodule import RecDataModule


def sharded_collections(model: nn.Module) -> list[ShardedEmbeddingBagCollection]:
    """Every sharded collection of ``model``, each once, in module order (the same order on every rank)."""
    return list({id(m): m for m in model.modules() if isinstance(m, ShardedEmbeddingBagCollection)}.values())


def start_input_dists(collections: list[ShardedEmbeddingBagCollection], batch: Batch) -> None:
    """Start the input dist of ``batch`` on every collection (collective, in the collections' order).

    Args:
        collections: the model's sharded collections (``sharded_collections``).
        batch: a training batch on the device, before its step.

    Example:
        >>> start_input_dists(sharded_collections(model), next_batch)  # doctest: +SKIP
    """
    for collection in collections:
        collection.prefetch(batch.sparse_features)


def attach_input_pipeline(model: nn.Module, datamodule: Any) -> bool:
    """Have ``datamodule``'s training loader start each next batch's input dists; whether it was attached.

    Nothing is attached to a data module that is not a RecDataModule or to a model without
    sharded collections. Call it on every rank (the same model and data module everywhere).

    Args:
        model: the model, sharded (``configure_model`` ran).
        datamodule: the trainer's data module (``trainer.datamodule``).

    Example:
        >>> attach_input_pipeline(module.model, trainer.datamodule)  # doctest: +SKIP
        True
    """
    collections = sharded_collections(model)
    if not collections or not isinstance(datamodule, RecDataModule):
        return False
    datamodule.on_train_batch_ready(functools.partial(start_input_dists, collections))
    return True


def drop_started_input_dists(model: nn.Module) -> None:
    """Finish and drop the input dists started for batches that will not be trained on (end of training).

    Args:
        model: the model.

    Example:
        >>> drop_started_input_dists(module.model)  # doctest: +SKIP
    """
    for collection in sharded_collections(model):
        collection.drop_prefetched()

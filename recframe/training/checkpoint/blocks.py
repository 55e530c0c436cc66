"""A rank's block of an embedding table (or of its optimizer state) as a ``ShardedTensor`` for DCP.

Why ``ShardedTensor``: DCP is torch's format for sharded state and reshards on load by chunk
overlap; a ``ShardedTensor`` built from a rank's block and the plan's shard list
(``_init_from_local_shards_and_global_metadata``, no communication) describes uneven row-wise
splits and column blocks exactly, which DTensor's even ``Shard(dim)`` placements cannot. torch
warns that ShardedTensor will be replaced by DTensor; the warning is silenced here (it works with
gloo and NCCL in torch 2.11 and 2.13, tested), and only this file would change.

Example:
    >>> import torch
    >>> from recframe.training.checkpoint.layout import Place
    >>> place = Place(global_shape=(4, 2), shards=((0, (0, 0), (4, 2)),), local=0)
    >>> with quiet_sharded_tensor():  # doctest: +SKIP
    ...     block = sharded_block(torch.zeros(4, 2), place)  # needs a process group (rank 0 of 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from recframe.training.checkpoint.layout import Place


@contextmanager
def quiet_sharded_tensor() -> Iterator[None]:
    """Silence torch's ShardedTensor deprecation and single-process warnings inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ShardedTensor.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*assuming the intent is to .* in a single process.*")
        yield


def sharded_block(local: torch.Tensor, place: Place) -> Any:
    """A ShardedTensor of this rank's block ``local`` in the layout ``place`` (no communication).

    Args:
        local: this rank's block (its shape is the local shard's).
        place: the table's global shape, every rank's shard and which one is this rank's.
    """
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
    from torch.distributed._shard.sharded_tensor.metadata import ShardedTensorMetadata, TensorProperties
    from torch.distributed._shard.sharding_spec import ShardMetadata

    shards = [ShardMetadata(list(offsets), list(sizes), f"rank:{rank}/cpu") for rank, offsets, sizes in place.shards]
    assert place.local is not None
    metadata = ShardedTensorMetadata(shards_metadata=shards, size=torch.Size(place.global_shape),
                                     tensor_properties=TensorProperties(dtype=local.dtype))
    return ShardedTensor._init_from_local_shards_and_global_metadata([Shard(local, shards[place.local])], metadata)

"""``load``: read a checkpoint folder into this rank's layout, on every rank at once.

Loading never runs code from a file: ``.metadata`` goes through ``safety``'s restricted
unpickler, non-tensor DCP values are refused, tensors load with ``weights_only``, JSON is JSON.
The saved world size and sharding plan do not matter: DCP reads each rank's blocks from the
saved chunks that overlap them (resharding). A damaged folder is named with what is wrong and
what to do: a data file shorter than its index says (``check_storage``), ``state.json`` naming a
tensor the index does not hold, a tensor that does not load.

Example:
    >>> import tempfile, pathlib, torch
    >>> from recframe.training.checkpoint.writer import save
    >>> folder = save({"state_dict": {"w": torch.ones(2)}}, pathlib.Path(tempfile.mkdtemp()), 1, None, keep_last=1)
    >>> checkpoint, saved = load(folder, layout=None)
    >>> checkpoint["state_dict"]["w"].tolist(), saved["world_size"]
    ([1.0, 1.0], 1)
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException

from recframe import storage
from recframe.storage import Location
from recframe.training.checkpoint.blocks import quiet_sharded_tensor, sharded_block
from recframe.training.checkpoint.folder import CheckpointReadError, read_manifest
from recframe.training.checkpoint.layout import ModelLayout
from recframe.training.checkpoint.ranks import agree, describe, rank_world
from recframe.training.checkpoint.safety import (
    SafeLoadPlanner,
    UnsafeCheckpointError,
    read_metadata_file,
    safe_storage_reader,
)
from recframe.training.checkpoint.tree import decode
from recframe.training.checkpoint.writer import STATE_JSON


def load(folder: Location, layout: ModelLayout | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint folder into this rank's layout; collective: call it on every rank.

    Args:
        folder: a ``step-N`` folder (a local path or an fsspec URL).
        layout: the blocks this rank holds now (None: everything whole, one process). The saved
            world size and plan do not matter.

    Returns:
        Lightning's checkpoint dict (``state_dict`` with this rank's table blocks, ``sparse_optimizer``
        with their states) and the checkpoint's ``state.json`` (``config``, ``world_size``).

    Raises:
        CheckpointReadError: the folder is incomplete or damaged (the manifest says how), or does
            not fit this model.
        safety.UnsafeCheckpointError: the files ask for code to run; nothing was built.
    """
    try:
        return _load(folder, layout)
    except (UnsafeCheckpointError, CheckpointReadError):
        raise
    except KeyError as error:
        raise CheckpointReadError(f"cannot load the checkpoint {folder}: its state.json has no entry "
                                  f"{error.args[0]!r} (damaged or not a recframe checkpoint): {USE_ANOTHER}") from error
    except (ValueError, OSError) as error:
        raise CheckpointReadError(f"cannot load the checkpoint {folder}: {error}") from error


USE_ANOTHER = "load another checkpoint (an older checkpoints/step-N), or copy this one again from where it was written"


def check_storage(folder: Location, metadata: Any) -> None:
    """Every data file the index (``.metadata``) names exists and is as long as the index says.

    Args:
        folder: the checkpoint folder.
        metadata: its checked DCP index.

    Raises:
        CheckpointReadError: naming the file, its size, the size it needs and the first tensor cut off.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from recframe.training.checkpoint.writer import save
        >>> from recframe.training.checkpoint.safety import read_metadata_file
        >>> folder = save({"state_dict": {"w": torch.ones(2)}}, pathlib.Path(tempfile.mkdtemp()), 1, None, 1)
        >>> data = next(folder.glob("*.distcp"))
        >>> _ = data.write_bytes(data.read_bytes()[:100])
        >>> check_storage(folder, read_metadata_file(folder / ".metadata"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recframe.training.checkpoint.folder.CheckpointReadError: .../__0_0.distcp is truncated: 100 bytes, ...
    """
    ends: dict[str, list[tuple[int, str]]] = {}  # data file -> (where each tensor ends, its name)
    for index, info in (metadata.storage_data or {}).items():
        ends.setdefault(str(info.relative_path), []).append((int(info.offset) + int(info.length), index.fqn))
    for path, stops in sorted(ends.items()):
        file = storage.join(folder, path)
        if not storage.is_file(file):
            raise CheckpointReadError(f"{file} is missing, though the checkpoint's index (.metadata) stores tensors "
                                      f"in it: {USE_ANOTHER}")
        size, end = storage.size(file), max(stops)[0]
        if size < end:
            first = min(stop for stop in stops if stop[0] > size)[1]
            raise CheckpointReadError(f"{file} is truncated: {size} bytes, its index (.metadata) needs {end} (from "
                                      f"{first!r} on): the file was cut short (an interrupted copy, a full disk); "
                                      f"{USE_ANOTHER}")


def _empty_state(folder: Location, metadata: Any, layout: ModelLayout | None, rank: int) -> dict[str, Any]:
    """Empty tensors (table blocks as ShardedTensors) for what this rank loads, checked against the model's shapes."""
    state: dict[str, Any] = {}
    for key, meta in metadata.state_dict_metadata.items():
        if key.startswith("rank") and not key.startswith(f"rank{rank}/"):
            continue
        if layout is not None and not layout.holds(key):
            continue
        shape = tuple(meta.size)
        dtype = meta.properties.dtype
        place = layout.place(key, len(shape)) if layout is not None else None
        if place is not None and place.global_shape != shape:
            raise ValueError(f"{folder}: {key} has shape {shape} in the checkpoint, the model's is "
                             f"{place.global_shape} (another table size?)")
        if place is None or place.local is None:
            state[key] = torch.empty(shape, dtype=dtype)
        else:
            _, _, sizes = place.shards[place.local]
            state[key] = sharded_block(torch.empty(sizes, dtype=dtype), place)
    return state


def _load(folder: Location, layout: ModelLayout | None) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch.distributed.checkpoint as dcp

    rank, _ = rank_world()
    failure: Exception | None = None
    try:  # this rank's own checks: a failure here must reach every rank before the collective dcp.load
        read_manifest(folder)
        metadata = read_metadata_file(storage.join(folder, ".metadata"))
        check_storage(folder, metadata)
        saved = json.loads(storage.read_text(storage.join(folder, STATE_JSON)))
        with quiet_sharded_tensor():
            state = _empty_state(folder, metadata, layout, rank)
    except (ValueError, OSError, KeyError) as error:
        failure = error
    problems = agree(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if problems:
        raise CheckpointReadError(f"cannot load the checkpoint {folder}: " + "; ".join(problems))
    with quiet_sharded_tensor():
        try:
            dcp.load(state, storage_reader=safe_storage_reader(folder), planner=SafeLoadPlanner())
        except CheckpointException as error:
            failures = [exc for exc, _ in error.failures.values()]
            unsafe = [exc for exc in failures if isinstance(exc, UnsafeCheckpointError)]
            if unsafe:
                raise unsafe[0] from None
            if any(isinstance(exc, pickle.UnpicklingError) for exc in failures):  # torch's text suggests unsafe
                raise UnsafeCheckpointError(f"{folder}: a tensor of the checkpoint is not a plain tensor (it asks for "
                                            "objects to be built): refused; the file may be crafted, do not load "
                                            "it") from None
            raise ValueError(f"cannot read the checkpoint {folder}: {describe(error)}: the data files do not match "
                             f"the index; {USE_ANOTHER}") from None
    tensors = {k: v.local_shards()[0].tensor if hasattr(v, "local_shards") else v for k, v in state.items()}
    try:
        checkpoint = decode(saved["checkpoint"], tensors)
    except KeyError as error:
        raise CheckpointReadError(f"{storage.join(folder, STATE_JSON)} names the tensor {error.args[0]!r}, which the "
                                  f"checkpoint's index (.metadata) does not hold: the folder is damaged or mixes two "
                                  f"checkpoints; {USE_ANOTHER}") from None
    checkpoint["state_dict"] = {k[len("state_dict/"):]: v for k, v in tensors.items() if k.startswith("state_dict/")}
    sparse: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for key, value in tensors.items():
        if key.startswith("sparse_optimizer/"):
            _, path, table, name = key.split("/")
            sparse.setdefault(path, {}).setdefault(table, {})[name] = value
    checkpoint["sparse_optimizer"] = sparse
    rng = {k.split("/")[-1]: v for k, v in tensors.items() if k.startswith(f"rank{rank}/rng/")}
    if rng:
        checkpoint["rng"] = rng
    return checkpoint, saved

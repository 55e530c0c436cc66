"""``save``: write a checkpoint folder atomically, on every rank at once (see the package docstring).

The ranks agree after each step (``ranks.agree``), so a failure on one rank fails every rank
promptly with the same message, and nothing half-written is committed: the temporary folder is
removed and the older checkpoints stay as they were.

Example:
    >>> import tempfile, pathlib, torch
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> save({"state_dict": {"w": torch.zeros(2)}, "global_step": 4}, root, 4, layout=None, keep_last=1).name
    'step-4'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException

from recframe import storage
from recframe.storage import Location
from recframe.training.checkpoint.blocks import quiet_sharded_tensor, sharded_block
from recframe.training.checkpoint.folder import (
    CheckpointWriteError,
    commit,
    find_last,
    marker_commit,
    new_temp_folder,
    prune,
    read_manifest,
    temp_folder,
    write_manifest,
)
from recframe.training.checkpoint.layout import ModelLayout
from recframe.training.checkpoint.ranks import agree, describe, from_rank0, rank_world, same_token
from recframe.training.checkpoint.rng import rng_tensors
from recframe.training.checkpoint.tree import encode

log = logging.getLogger("recframe")

STATE_JSON = "state.json"
TENSOR_KEYS = ("state_dict", "sparse_optimizer")  # flat tensor maps, rebuilt from the DCP index on load


def save(checkpoint: dict[str, Any], root: Location, step: int, layout: ModelLayout | None, keep_last: int,
         config_text: str | None = None) -> Location:
    """Write ``checkpoint`` as ``root/step-<step>`` atomically; collective: call it on every rank.

    Args:
        checkpoint: Lightning's checkpoint dict of this rank (``state_dict`` with this rank's table blocks).
        root: the ``checkpoints/`` folder: a local path, or an fsspec URL (``s3://...``, ``memory://...``):
            there DCP's fsspec writer writes into ``step-<step>`` and the manifest, written last, commits it.
        step: the global step (the folder's name).
        layout: where this rank's table blocks sit (None: nothing is sharded, one process).
        keep_last: complete checkpoints to keep; older ones are deleted after the commit.
        config_text: the run's composed config (YAML), kept in the checkpoint for eval and export.

    Returns:
        The committed folder (a complete ``step-<step>`` this process committed before is kept
        as it is: the final save after a periodic one of the same step).

    Raises:
        CheckpointWriteError: naming the folder and every rank's reason; nothing is committed,
            the temporary folder is removed and the older checkpoints are untouched. Also when
            ``step-<step>`` exists but is damaged or was not written by this process (never overwritten).
    """
    import torch.distributed.checkpoint as dcp

    rank, world = rank_world()
    final = storage.join(root, f"step-{step}")
    existing = from_rank0(_existing(final, step) if rank == 0 else None)
    if existing == "saved":  # by this process at this step (the final save after a periodic one)
        return final
    if existing is not None:
        raise CheckpointWriteError(existing)
    token, temp, error = same_token(), None, None
    if rank == 0:
        try:
            temp = new_temp_folder(root, step, token)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
    problems = agree(error)
    if problems:
        raise CheckpointWriteError(f"cannot write a checkpoint into {root}: " + "; ".join(problems)
                                   + _previous_note(root))
    temp = temp_folder(root, step, token)
    state: dict[str, Any] = {}
    try:  # this rank's own work: a failure here must reach every rank before the collective dcp.save
        with quiet_sharded_tensor():
            tree, state = _local_state(checkpoint, layout, rank)
        if rank == 0:
            _write_state_json(temp, tree, config_text, world)
        error = None
    except Exception as e:
        error = describe(e)
    problems = agree(error)
    if not problems:
        try:
            with quiet_sharded_tensor():
                dcp.save(state, storage_writer=_storage_writer(temp))
            error = None
        except (Exception, CheckpointException) as e:  # every rank must hear of it, or the others would wait
            error = describe(e)
        problems = agree(error)
    error = None
    if not problems and rank == 0:
        try:
            write_manifest(temp, {"global_step": step, "world_size": world, "epoch": checkpoint.get("epoch")})
            commit(temp, final)
            _WRITTEN.add(_key(final))
            for old in prune(root, keep_last, final):
                log.info("removed old checkpoint %s", old)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
    problems = problems or agree(error)
    if problems:
        if rank == 0:  # on a URL temp is step-<step>, which did not exist before this save
            storage.rmtree(temp)
        raise CheckpointWriteError(f"cannot write the checkpoint of step {step} into {root}: "
                                   + "; ".join(problems) + _previous_note(root))
    return final


_WRITTEN: set[Location] = set()  # the step-N folders this process committed (rank 0)


def _key(folder: Location) -> Location:
    return folder.resolve() if isinstance(folder, Path) else folder


def _storage_writer(folder: Location) -> Any:
    """DCP's writer for ``folder``: files fsynced on local disk; on a URL, DCP's fsspec writer."""
    import torch.distributed.checkpoint as dcp

    if not marker_commit(folder):
        return dcp.FileSystemWriter(str(folder), sync_files=True)
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

    # sync_files would os.sync() the whole machine for files without a descriptor; an upload is complete on close
    return FsspecWriter(str(folder), sync_files=False)


def _existing(final: Location, step: int) -> str | None:
    """None: ``final`` is free; ``"saved"``: this process committed it, complete; else why it cannot be written."""
    if not storage.exists(final):
        return None
    try:
        manifest = read_manifest(final)
    except ValueError as error:
        return (f"cannot write the checkpoint of step {step}: {final} exists and is damaged ({error}); "
                "move it away or delete it")
    if _key(final) in _WRITTEN and manifest.get("global_step") == step:
        return "saved"
    return (f"cannot write the checkpoint of step {step}: {final} exists already, written by another run "
            "(resumed from an older checkpoint?); checkpoints are never overwritten: move it away or delete it")


def _local_state(checkpoint: dict[str, Any], layout: ModelLayout | None, rank: int) -> tuple[Any, dict[str, Any]]:
    """The JSON part of ``checkpoint`` and this rank's DCP state dict (table blocks as ShardedTensors)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = encode({k: v for k, v in checkpoint.items() if k not in TENSOR_KEYS}, "", tensors)
    for name, value in checkpoint.get("state_dict", {}).items():
        tensors[f"state_dict/{name}"] = value
    for path, tables in checkpoint.get("sparse_optimizer", {}).items():
        for table, states in tables.items():
            for name, value in states.items():
                tensors[f"sparse_optimizer/{path}/{table}/{name}"] = value
    for name, value in rng_tensors().items():
        tensors[f"rank{rank}/rng/{name}"] = value
    state: dict[str, Any] = {}
    for key, value in tensors.items():
        value = value.detach().cpu()
        place = layout.place(key, value.dim()) if layout is not None else None
        if place is None:
            state[key] = value
        elif place.local is not None:
            state[key] = sharded_block(value, place)
    return tree, state


def _write_state_json(temp: Location, tree: Any, config_text: str | None, world: int) -> None:
    """``state.json`` (the JSON part, the config, the world size), fsynced."""
    text = json.dumps({"checkpoint": tree, "config": config_text, "world_size": world}, indent=1)
    storage.write_bytes(storage.join(temp, STATE_JSON), text.encode(), durable=True)


def _previous_note(root: Location) -> str:
    last = find_last(root)
    return (f". The last good checkpoint, {last.folder}, is intact" if last.folder is not None
            else ". No earlier checkpoint exists")

"""recframe's one checkpoint format: torch.distributed.checkpoint (DCP) tensors + JSON, in atomic folders.

Used by every run, one process or many (``DistributedCheckpointIO`` is the Lightning plugin).
A checkpoint folder (``checkpoints/step-N``, see ``checkpoint_dir``) holds:

- DCP files: every tensor of Lightning's checkpoint dict, keyed by its path in that dict.
  Embedding tables and their fused optimizer states are keyed by table name (``checkpoint_layout``)
  and saved as blocks with global offsets, so a checkpoint of any world size and sharding plan
  loads into any other (resharding). Dense weights, the dense optimizer state and the sparse
  ``step`` counters are the same on every rank and DCP writes them once. Each rank's RNG states
  are tensors under ``rank<r>/``.
- ``state.json``: the rest of Lightning's dict (global step, epoch, loop counters, LR schedulers,
  optimizer hyperparameters, the data position, callback states, the run config) as JSON, with
  ``{"__tensor__": key}`` where a tensor was. Anything that is neither JSON nor a tensor is an
  error when saving, so a checkpoint never holds a pickled object.
- ``manifest.json``: written last, lists every file with its size (``checkpoint_dir``).

Why DCP and ``ShardedTensor``: DCP is torch's format for sharded state and reshards on load by
chunk overlap; a ``ShardedTensor`` built from a rank's block and the plan's shard list
(``_init_from_local_shards_and_global_metadata``, no communication) describes uneven row-wise
splits and column blocks exactly, which DTensor's even ``Shard(dim)`` placements cannot. torch
warns that ShardedTensor will be replaced by DTensor; the warning is silenced here (it works with
gloo and NCCL in torch 2.11 and 2.13, tested), and only this file would change.

Loading never runs code from a file: ``.metadata`` goes through ``checkpoint_safety``'s
restricted unpickler, non-tensor DCP values are refused, tensors load with ``weights_only``,
JSON is JSON.

Example:
    >>> io = DistributedCheckpointIO(keep_last=2)  # doctest: +SKIP
    >>> trainer = pl.Trainer(plugins=[io], ...)  # single process; ShardedStrategy(checkpoint_io=io) for several
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning_fabric.plugins import CheckpointIO
from torch.distributed.checkpoint.api import CheckpointException

from recframe.training.checkpoint_dir import (
    STEP_FOLDER,
    CheckpointReadError,
    CheckpointWriteError,
    commit,
    find_last,
    new_temp_folder,
    prune,
    read_manifest,
    write_manifest,
)
from recframe.training.checkpoint_layout import ModelLayout, Place
from recframe.training.checkpoint_safety import (
    SafeFileSystemReader,
    SafeLoadPlanner,
    UnsafeCheckpointError,
    read_metadata_file,
)

log = logging.getLogger("recframe")

STATE_JSON = "state.json"
TENSOR_KEYS = ("state_dict", "sparse_optimizer")  # flat tensor maps, rebuilt from the DCP index on load


# ---- the JSON part ---------------------------------------------------------------------------------
def encode(tree: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``tree`` as JSON, its tensors moved to ``tensors`` (key: the ``/``-joined path) and referenced.

    Dicts with non-string keys and tuples are tagged (``__dict__``, ``__tuple__``) so they come back
    as they were. Raises TypeError naming the path of any other object.
    """
    if isinstance(tree, torch.Tensor):
        if path in tensors:
            raise ValueError(f"two checkpoint tensors have the key {path!r}")
        tensors[path] = tree
        return {"__tensor__": path}
    if isinstance(tree, bool | int | float | str) or tree is None:
        return tree
    if isinstance(tree, tuple):
        return {"__tuple__": [encode(v, f"{path}/{i}", tensors) for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [encode(v, f"{path}/{i}", tensors) for i, v in enumerate(tree)]
    if isinstance(tree, dict):
        bad = [k for k in tree if not isinstance(k, str | int | float | bool) and k is not None]
        if bad:
            raise TypeError(f"checkpoint entry {path or '/'}: key {bad[0]!r} is not a string or a number")
        pairs = [[k, encode(v, f"{path}/{k}" if path else str(k), tensors)] for k, v in tree.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k in tree):
            return {k: v for k, v in pairs}
        return {"__dict__": pairs}
    raise TypeError(f"checkpoint entry {path or '/'} is a {type(tree).__module__}.{type(tree).__qualname__}: "
                    "only tensors, numbers, strings, lists and dicts can be saved (no pickled objects)")


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__tuple__"}:
            return tuple(decode(v, tensors) for v in tree["__tuple__"])
        if set(tree) == {"__dict__"}:
            return {k: decode(v, tensors) for k, v in tree["__dict__"]}
        return {k: decode(v, tensors) for k, v in tree.items()}
    return tree


# ---- per-rank random number generator states ---------------------------------------------------------
def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch (CPU and current CUDA device), numpy and Python RNG states, as tensors."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, _ = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": torch.from_numpy(np.concatenate([keys.astype(np.int64), [pos, has_gauss]])),
           "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
           "python": torch.tensor([version, *internal], dtype=torch.int64)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    """Set the RNG states saved by :func:`rng_tensors`."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"].numpy()
    np.random.set_state(("MT19937", numpy[:-2].astype(np.uint32), int(numpy[-2]), int(numpy[-1]),
                         float(state["numpy_gauss"])))
    python = state["python"].tolist()
    random.setstate((python[0], tuple(python[1:]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---- collectives that work without a process group ----------------------------------------------------
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _agree(error: str | None) -> list[str]:
    """Every rank's error (None: fine), on every rank; nothing to exchange in one process."""
    if _rank_world()[1] == 1:
        return [e for e in [error] if e]
    errors: list[str | None] = [None] * _rank_world()[1]
    dist.all_gather_object(errors, error)
    return [f"rank {r}: {e}" for r, e in enumerate(errors) if e]


def _same_token() -> str:
    """8 random hex digits, rank 0's on every rank."""
    token = [secrets.token_hex(4)]
    if _rank_world()[1] > 1:
        dist.broadcast_object_list(token, src=0)
    return token[0]


@contextmanager
def _quiet_sharded_tensor() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ShardedTensor.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*assuming the intent is to .* in a single process.*")
        yield


def _sharded(local: torch.Tensor, place: Place) -> Any:
    """A ShardedTensor of this rank's block ``local`` in the layout ``place`` (no communication)."""
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
    from torch.distributed._shard.sharded_tensor.metadata import ShardedTensorMetadata, TensorProperties
    from torch.distributed._shard.sharding_spec import ShardMetadata

    shards = [ShardMetadata(list(offsets), list(sizes), f"rank:{rank}/cpu") for rank, offsets, sizes in place.shards]
    assert place.local is not None
    metadata = ShardedTensorMetadata(shards_metadata=shards, size=torch.Size(place.global_shape),
                                     tensor_properties=TensorProperties(dtype=local.dtype))
    return ShardedTensor._init_from_local_shards_and_global_metadata([Shard(local, shards[place.local])], metadata)


# ---- save and load -------------------------------------------------------------------------------------
def save(checkpoint: dict[str, Any], root: Path, step: int, layout: ModelLayout | None, keep_last: int,
         config_text: str | None = None) -> Path:
    """Write ``checkpoint`` as ``root/step-<step>`` atomically; collective: call it on every rank.

    Args:
        checkpoint: Lightning's checkpoint dict of this rank (``state_dict`` with this rank's table blocks).
        root: the ``checkpoints/`` folder.
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

    rank, world = _rank_world()
    final = root / f"step-{step}"
    existing = _from_rank0(_existing(final, step) if rank == 0 else None)
    if existing == "saved":  # by this process at this step (the final save after a periodic one)
        return final
    if existing is not None:
        raise CheckpointWriteError(existing)
    token, temp, error = _same_token(), None, None
    if rank == 0:
        try:
            temp = new_temp_folder(root, step, token)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
    problems = _agree(error)
    if problems:
        raise CheckpointWriteError(f"cannot write a checkpoint into {root}: " + "; ".join(problems)
                                   + _previous_note(root))
    temp = root / f".tmp-step-{step}-{token}"
    state: dict[str, Any] = {}
    try:  # this rank's own work: a failure here must reach every rank before the collective dcp.save
        with _quiet_sharded_tensor():
            tree, state = _local_state(checkpoint, layout, rank)
        if rank == 0:
            _write_state_json(temp, tree, config_text, world)
        error = None
    except Exception as e:
        error = _describe(e)
    problems = _agree(error)
    if not problems:
        try:
            with _quiet_sharded_tensor():
                dcp.save(state, storage_writer=dcp.FileSystemWriter(str(temp), sync_files=True))
            error = None
        except (Exception, CheckpointException) as e:  # every rank must hear of it, or the others would wait
            error = _describe(e)
        problems = _agree(error)
    error = None
    if not problems and rank == 0:
        try:
            write_manifest(temp, {"global_step": step, "world_size": world, "epoch": checkpoint.get("epoch")})
            commit(temp, final)
            _WRITTEN.add(final.resolve())
            for old in prune(root, keep_last, final):
                log.info("removed old checkpoint %s", old)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
    problems = problems or _agree(error)
    if problems:
        if rank == 0:
            shutil.rmtree(temp, ignore_errors=True)
        raise CheckpointWriteError(f"cannot write the checkpoint of step {step} into {root}: "
                                   + "; ".join(problems) + _previous_note(root))
    return final


_WRITTEN: set[Path] = set()  # the step-N folders this process committed (rank 0)


def _existing(final: Path, step: int) -> str | None:
    """None: ``final`` is free; ``"saved"``: this process committed it, complete; else why it cannot be written."""
    if not final.exists():
        return None
    try:
        manifest = read_manifest(final)
    except ValueError as error:
        return (f"cannot write the checkpoint of step {step}: {final} exists and is damaged ({error}); "
                "move it away or delete it")
    if final.resolve() in _WRITTEN and manifest.get("global_step") == step:
        return "saved"
    return (f"cannot write the checkpoint of step {step}: {final} exists already, written by another run "
            "(resumed from an older checkpoint?); checkpoints are never overwritten: move it away or delete it")


def _from_rank0(value: str | None) -> str | None:
    """Rank 0's ``value`` on every rank."""
    box = [value]
    if _rank_world()[1] > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


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
            state[key] = _sharded(value, place)
    return tree, state


def _write_state_json(temp: Path, tree: Any, config_text: str | None, world: int) -> None:
    """``state.json`` (the JSON part, the config, the world size), fsynced."""
    text = json.dumps({"checkpoint": tree, "config": config_text, "world_size": world}, indent=1)
    with open(temp / STATE_JSON, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _describe(error: BaseException) -> str:
    """One line per cause (DCP's CheckpointException wraps each rank's exception with its traceback)."""
    if isinstance(error, CheckpointException):
        causes = {f"{type(exc).__name__}: {exc}" for exc, _ in error.failures.values()}
        return "; ".join(sorted(causes))
    return f"{type(error).__name__}: {error}"


def _previous_note(root: Path) -> str:
    last = find_last(root)
    return (f". The last good checkpoint, {last.folder}, is intact" if last.folder is not None
            else ". No earlier checkpoint exists")


def load(folder: Path, layout: ModelLayout | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint folder into this rank's layout; collective: call it on every rank.

    Args:
        folder: a ``step-N`` folder.
        layout: the blocks this rank holds now (None: everything whole, one process). The saved
            world size and plan do not matter.

    Returns:
        Lightning's checkpoint dict (``state_dict`` with this rank's table blocks, ``sparse_optimizer``
        with their states) and the checkpoint's ``state.json`` (``config``, ``world_size``).

    Raises:
        CheckpointReadError: the folder is incomplete or damaged (the manifest says how), or does
            not fit this model.
        checkpoint_safety.UnsafeCheckpointError: the files ask for code to run; nothing was built.
    """
    try:
        return _load(folder, layout)
    except (UnsafeCheckpointError, CheckpointReadError):
        raise
    except (ValueError, OSError, KeyError) as error:
        raise CheckpointReadError(f"cannot load the checkpoint {folder}: {error}") from error


def _empty_state(folder: Path, metadata: Any, layout: ModelLayout | None, rank: int) -> dict[str, Any]:
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
            state[key] = _sharded(torch.empty(sizes, dtype=dtype), place)
    return state


def _load(folder: Path, layout: ModelLayout | None) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch.distributed.checkpoint as dcp

    rank, _ = _rank_world()
    failure: Exception | None = None
    try:  # this rank's own checks: a failure here must reach every rank before the collective dcp.load
        read_manifest(folder)
        metadata = read_metadata_file(folder / ".metadata")
        saved = json.loads((folder / STATE_JSON).read_text())
        with _quiet_sharded_tensor():
            state = _empty_state(folder, metadata, layout, rank)
    except (ValueError, OSError, KeyError) as error:
        failure = error
    problems = _agree(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if problems:
        raise CheckpointReadError(f"cannot load the checkpoint {folder}: " + "; ".join(problems))
    with _quiet_sharded_tensor():
        try:
            dcp.load(state, storage_reader=SafeFileSystemReader(str(folder)), planner=SafeLoadPlanner())
        except CheckpointException as error:
            unsafe = [exc for exc, _ in error.failures.values() if isinstance(exc, UnsafeCheckpointError)]
            if unsafe:
                raise unsafe[0] from None
            raise ValueError(f"cannot read the checkpoint {folder}: {_describe(error)}") from None
    tensors = {k: v.local_shards()[0].tensor if hasattr(v, "local_shards") else v for k, v in state.items()}
    checkpoint = decode(saved["checkpoint"], tensors)
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


class DistributedCheckpointIO(CheckpointIO):
    """Lightning's checkpoint I/O through :func:`save` / :func:`load` (see the module docstring).

    ``save_checkpoint`` is collective: a strategy must call it on every rank (``ShardedStrategy``
    does; Lightning's single-device strategy has only one). ``path`` is the ``step-N`` folder.

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
        folder = Path(path)
        step = int(folder.name.removeprefix("step-"))
        save(checkpoint, folder.parent, step, storage_options, self.keep_last, self.config_text)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None, layout: ModelLayout | None = None) -> dict[str, Any]:
        """Load into this rank's ``layout`` (None: whole tensors). ``map_location``: tensors stay on the CPU."""
        checkpoint, _ = load(Path(path), layout)
        if "rng" in checkpoint:
            restore_rng(checkpoint.pop("rng"))
        return checkpoint

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Delete a checkpoint folder (only one named like recframe's own ``step-N``)."""
        folder = Path(path)
        if not STEP_FOLDER.match(folder.name):
            raise ValueError(f"{folder} is not a recframe checkpoint folder (step-N): not removed")
        shutil.rmtree(folder, ignore_errors=True)

"""Reading a torch.distributed.checkpoint (DCP) folder without running code from it.

DCP stores its index, ``.metadata``, as a Python pickle, and ``pickle.load`` can call any
importable function: a crafted ``.metadata`` runs code the moment DCP reads it. DCP also stores
non-tensor values (``BytesStorageMetadata``) as ``torch.save`` payloads that its default load
planner reads with ``torch.load(weights_only=False)``: a second way in. recframe closes both:

- :class:`SafeFileSystemReader` reads ``.metadata`` through :class:`RestrictedUnpickler`, which
  builds only the DCP metadata classes, ``torch.Size``, dtypes, layouts and plain containers
  (an allow-list of ``(module, name)`` pairs; anything else is refused naming the global), and
  then checks the index: every entry must be a tensor (recframe writes no pickled values, see
  ``recframe.training.checkpoint``), and every data file it names must be a plain file name
  inside the folder.
- :class:`SafeLoadPlanner` refuses to load any non-tensor value instead of unpickling it.
- DCP reads the tensor data itself with ``torch.load(weights_only=True)``.

Example:
    >>> import torch.distributed.checkpoint as dcp
    >>> state = {"w": torch.zeros(3)}  # doctest: +SKIP
    >>> dcp.load(state, storage_reader=SafeFileSystemReader(folder), planner=SafeLoadPlanner())  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import pickle
import re
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.planner import ReadItem

from recframe import storage
from recframe.errors import RecframeError

METADATA_FILE = ".metadata"

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
# Every global a DCP .metadata of tensors needs (torch 2.11 and 2.13), and nothing that can run code:
# data classes, an enum, torch.Size, the layout lookup, the path type of checkpoint ids; and any
# torch dtype (``is_allowed_global``).
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    *((_DCP_METADATA, name) for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                                         "ChunkStorageMetadata", "TensorProperties", "MetadataIndex",
                                         "StorageMeta", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a lookup of layout names (torch.strided, ...)
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
})


def is_allowed_global(module: str, name: str) -> bool:
    """Whether a pickle may build ``module.name``: one of :data:`ALLOWED_GLOBALS` or a torch dtype (``torch.uint16``).

    Example:
        >>> is_allowed_global("torch", "complex64"), is_allowed_global("os", "system")
        (True, False)
    """
    return (module, name) in ALLOWED_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                  torch.dtype))


class UnsafeCheckpointError(RecframeError, ValueError):
    """A checkpoint file asks for something recframe will not do while loading (it may be crafted)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only the globals of :func:`is_allowed_global`.

    Args:
        file: the open binary pickle.
        source: the file's name, for the error message.

    Example:
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(torch.Size([2, 3]))), "x").load()
        torch.Size([2, 3])
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if not is_allowed_global(module, name):
            raise UnsafeCheckpointError(
                f"{self.source} asks to build {module}.{name}, which is not a checkpoint metadata type: refused "
                f"(the file may be crafted to run code on load; do not load it)")
        return super().find_class(module, name)


def check_metadata(metadata: Any, source: str) -> Metadata:
    """The DCP index ``metadata`` if it holds only tensors stored in plain files of its folder.

    Args:
        metadata: what the restricted unpickler built.
        source: the ``.metadata`` path, for messages.

    Raises:
        UnsafeCheckpointError: a non-tensor entry, or a data file path that leaves the folder.
    """
    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpointError(f"{source} is not a DCP index (it holds a {type(metadata).__name__})")
    problems = [f"{key!r} is a pickled value, not a tensor" for key, value in metadata.state_dict_metadata.items()
                if not isinstance(value, TensorStorageMetadata)]
    for index, info in (metadata.storage_data or {}).items():
        path = str(getattr(info, "relative_path", ""))
        if not path or os.path.basename(path) != path or path in (".", ".."):
            problems.append(f"{index.fqn!r} points at {path!r}, outside the checkpoint folder")
    if problems:
        raise UnsafeCheckpointError(f"{source}: refused ({len(problems)} problems): " + "; ".join(problems[:5]))
    return metadata


def read_metadata_file(path: str | os.PathLike) -> Metadata:
    """Read and check a ``.metadata`` file (a local path or an fsspec URL, see :func:`check_metadata`), never
    running code from it."""
    with storage.open_file(storage.location(path), "rb") as f:
        try:
            metadata = RestrictedUnpickler(f, str(path)).load()
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # truncated or garbage: a broken checkpoint, not a crafted one
            raise ValueError(f"{path} is not a readable DCP index: {error}") from error
    return check_metadata(metadata, str(path))


class SafeFileSystemReader(FileSystemReader):
    """DCP's FileSystemReader with the index read by :func:`read_metadata_file`.

    Args:
        path: the checkpoint folder.
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata_file(os.path.join(str(self.path), METADATA_FILE))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeFsspecReader(FsspecReader):
    """DCP's FsspecReader (a checkpoint at an fsspec URL) with the index read by :func:`read_metadata_file`.

    Args:
        path: the checkpoint folder's URL.
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata_file(storage.join(str(self.path).rstrip("/"), METADATA_FILE))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def safe_storage_reader(folder: str | os.PathLike) -> FileSystemReader:
    """The safe DCP reader of a checkpoint folder: :class:`SafeFileSystemReader` for a local path,
    :class:`SafeFsspecReader` for a URL. Tensors are read with ``torch.load(weights_only=True)`` by both."""
    return SafeFsspecReader(str(folder)) if storage.is_url(str(folder)) else SafeFileSystemReader(str(folder))


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, except that a non-tensor value is refused rather than unpickled."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        raise UnsafeCheckpointError(f"the checkpoint stores {read_item.dest_index.fqn!r} as a pickled value: "
                                    "refused (recframe checkpoints hold tensors only)")


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` of a file of tensors and plain containers, never running code (``weights_only=True``).

    Args:
        path: the file.

    Raises:
        UnsafeCheckpointError: the file asks for other objects (torch's own message would suggest loading it
            unsafely, which runs its code: recframe never does).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"(?:Unsupported global|Unsupported operand|GLOBAL)[^\n]*", str(error))
        what = f" ({found.group(0).strip()})" if found else ""
        raise UnsafeCheckpointError(f"{path} asks for objects other than tensors and plain values to be built"
                                    f"{what}: refused (the file may be crafted to run code on load; do not load it; "
                                    "write a new one with recframe export)") from None

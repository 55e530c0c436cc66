"""Paths that are a local path or an fsspec URL (``s3://``, ``gs://``, ``hdfs://``, ``memory://``, ``file://``).

A *location* is a :class:`~pathlib.Path` (local disk: atomic renames, fsync) or a URL string
(any fsspec filesystem; credentials come from the usual environment of its package, e.g. s3fs
reads ``AWS_*``). :func:`location` turns what a user wrote into one; the other functions work on
both, so a caller never joins URLs with ``Path`` (which would fold ``s3://b`` into ``s3:/b``).
``file://`` URLs go through fsspec's local filesystem like any other URL (the tests use them to
exercise the URL path across processes); a plain path keeps local-disk semantics.

Example:
    >>> loc = location("memory://doc/run")
    >>> write_bytes(join(loc, "a.txt"), b"hi")
    >>> read_bytes(join(loc, "a.txt")), children(loc), name(join(loc, "a.txt"))
    (b'hi', [('a.txt', False)], 'a.txt')
    >>> rmtree(loc)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Union

Location = Union[Path, str]  # noqa: UP007 (a runtime alias)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path.

    Example:
        >>> is_url("s3://bucket/x"), is_url("file:///tmp/x"), is_url("outputs/run1"), is_url(Path("a"))
        (True, True, False, False)
    """
    return isinstance(path, str) and bool(_URL.match(path))


def location(path: str | os.PathLike) -> Location:
    """A URL stays a string (without a trailing ``/``); anything else becomes a :class:`Path`."""
    if is_url(path):
        text = str(path)
        return text.rstrip("/") if not text.endswith("://") else text
    return Path(path)


def _fs(loc: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(loc)


def join(loc: Location, *names: str) -> Location:
    """``loc`` / ``names`` (a URL joined with ``/``)."""
    if isinstance(loc, Path):
        return loc.joinpath(*names)
    return "/".join([loc.rstrip("/"), *names])


def name(loc: Location) -> str:
    """The last component (``step-4`` of ``s3://b/run/checkpoints/step-4``)."""
    return loc.name if isinstance(loc, Path) else loc.rstrip("/").rsplit("/", 1)[-1]


def parent(loc: Location) -> Location:
    """The folder holding ``loc``."""
    return loc.parent if isinstance(loc, Path) else loc.rstrip("/").rsplit("/", 1)[0]


def exists(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.exists()
    fs, path = _fs(loc)
    return bool(fs.exists(path))


def is_dir(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.is_dir()
    fs, path = _fs(loc)
    return bool(fs.isdir(path))


def is_file(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.is_file()
    fs, path = _fs(loc)
    return bool(fs.isfile(path))


def size(loc: Location) -> int:
    """The size of a file in bytes."""
    if isinstance(loc, Path):
        return loc.stat().st_size
    fs, path = _fs(loc)
    return int(fs.size(path))


# what stores report of a file's version (s3: ETag, LastModified; local, hdfs: mtime; gcs: generation, md5Hash;
# azure: etag, last_modified; memory: created)
VERSION_KEYS = ("ETag", "etag", "VersionId", "LastModified", "last_modified", "mtime", "generation", "md5Hash",
                "crc32c", "created")


def info_version(info: dict[str, Any]) -> str:
    """The version fields of an fsspec ``info`` dict, as one string (it changes when the file is written again).

    Example:
        >>> info_version({"name": "b/x", "size": 3, "ETag": '"9a0364b9"'})
        'ETag="9a0364b9"'
    """
    return ";".join(f"{key}={info[key]}" for key in VERSION_KEYS if info.get(key) is not None)


def stamp(loc: Location) -> str:
    """What changes when the file at ``loc`` is written again: its size and mtime, or its store's version fields.

    Raises:
        FileNotFoundError: no file is there.
    """
    if isinstance(loc, Path):
        stat = loc.stat()
        return f"size={stat.st_size};mtime={stat.st_mtime_ns}"
    fs, path = _fs(loc)
    info = fs.info(path)
    return f"size={info['size']};{info_version(info)}"


def children(loc: Location) -> list[tuple[str, bool]]:
    """``(name, is a folder)`` of every entry directly in the folder ``loc``, sorted; [] if it is missing."""
    if isinstance(loc, Path):
        return sorted((p.name, p.is_dir()) for p in loc.iterdir()) if loc.is_dir() else []
    fs, path = _fs(loc)
    fs.invalidate_cache(path)  # another process (rank) may have written here since this one last looked
    if not fs.isdir(path):
        return []
    out = []
    for entry in fs.ls(path, detail=True):
        entry_name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        out.append((entry_name, entry.get("type") == "directory"))
    return sorted(out)


def open_file(loc: Location, mode: str = "rb") -> IO[Any]:
    """An open file (a context manager); URLs through ``fsspec``."""
    if isinstance(loc, Path):
        return open(loc, mode)  # noqa: SIM115 (the caller closes it)
    fs, path = _fs(loc)
    return fs.open(path, mode)


def read_bytes(loc: Location) -> bytes:
    with open_file(loc, "rb") as f:
        return f.read()


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode()


def write_bytes(loc: Location, data: bytes, durable: bool = False) -> None:
    """Write a whole file; ``durable``: fsync it (local disk; an object store's upload is complete on close)."""
    if isinstance(loc, Path):
        with open(loc, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        return
    fs, path = _fs(loc)
    with fs.open(path, "wb") as f:
        f.write(data)


def makedirs(loc: Location) -> None:
    """Create the folder and its parents (a no-op on object stores, which have no empty folders)."""
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)
    else:
        fs, path = _fs(loc)
        fs.makedirs(path, exist_ok=True)


def rmtree(loc: Location) -> None:
    """Delete a folder and everything in it; a missing one is fine."""
    if isinstance(loc, Path):
        shutil.rmtree(loc, ignore_errors=True)
        return
    fs, path = _fs(loc)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def move(source: Location, target: Location) -> None:
    """Rename a folder (local: one atomic rename; URL: fsspec's move, a copy and delete on object stores).

    Raises:
        FileNotFoundError: ``source`` is gone.
    """
    if isinstance(source, Path) and isinstance(target, Path):
        source.rename(target)
        return
    fs, path = _fs(str(source))
    target_path = _fs(str(target))[1]
    files = fs.find(path) if fs.isdir(path) else ([path] if fs.exists(path) else [])
    if not files:
        raise FileNotFoundError(str(source))
    for file in files:  # copy every file (server-side on object stores), then delete the originals
        destination = target_path if file == path else f"{target_path}/{file[len(path.rstrip('/')) + 1:]}"
        fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
        fs.copy(file, destination)
    fs.rm(files)
    if fs.isdir(path):  # a local or memory folder left empty
        fs.rm(path, recursive=True)
    fs.invalidate_cache()


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` (a local path or a URL) is not a readable file, or None when it is one.

    Example:
        >>> file_problem("memory://nowhere/x.csv")
        'no such file: memory://nowhere/x.csv'
        >>> file_problem("nosuchscheme://b/x.csv").split(":")[0]
        'cannot open nosuchscheme'
    """
    loc = location(path)
    if isinstance(loc, Path):
        return None if loc.is_file() else f"no such file: {path} (from {Path.cwd()})"
    try:
        fs, inner = _fs(loc)
        found = fs.isfile(inner)
    except (ImportError, ValueError) as error:  # the scheme's fsspec package is not installed, or no such scheme
        scheme = loc.split("://", 1)[0]
        return (f"cannot open {scheme}:// URLs: {str(error).splitlines()[0]} (install the fsspec package of that "
                f"store, e.g. pip install 'recframe[s3]' for s3://)")
    except OSError as error:  # no access, no network
        return f"cannot read {path}: {type(error).__name__}: {error}"
    return None if found else f"no such file: {path}"


@contextmanager
def staged_output(path: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """A local path to write ``path``'s file or folder to: ``path`` itself, or for a URL a temporary local copy that
    is uploaded when the block ends without an error (each file in one upload: on an object store it appears
    whole; nothing is uploaded after an error).

    Args:
        path: a local path or an fsspec URL.
        marker: a folder's commit marker (``feature_map.json``): the URL's old one is deleted before the upload
            and the new one uploaded last, so a reader never takes a half-replaced folder for a complete one.

    Example:
        >>> with staged_output("memory://doc-out/model.pt") as local:
        ...     _ = local.write_bytes(b"weights")
        >>> read_bytes("memory://doc-out/model.pt")
        b'weights'
    """
    loc = location(path)
    if isinstance(loc, Path):
        yield loc
        return
    with tempfile.TemporaryDirectory(prefix="recframe-out-") as tmp:
        local = Path(tmp) / name(loc)
        yield local
        fs, inner = _fs(loc)
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        if marker is not None:
            if fs.exists(f"{inner}/{marker}"):
                fs.rm(f"{inner}/{marker}")
            files.sort(key=lambda p: p == local / marker)  # the marker last
        for file in files:
            target = inner if file == local else f"{inner}/{file.relative_to(local).as_posix()}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(file), target)


@contextmanager
def staged_input(path: str | os.PathLike) -> Iterator[Path]:
    """A local path to read ``path``'s file or folder from: ``path`` itself, or for a URL a temporary local copy
    (downloaded whole; removed when the block ends)."""
    loc = location(path)
    if isinstance(loc, Path):
        yield loc
        return
    fs, inner = _fs(loc)
    if not fs.exists(inner):
        raise FileNotFoundError(f"no such file: {path}")
    with tempfile.TemporaryDirectory(prefix="recframe-in-") as tmp:
        local = Path(tmp) / name(loc)
        if fs.isdir(inner):
            for entry in fs.find(inner):
                relative = entry[len(inner.rstrip("/")) + 1:]
                (local / relative).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(entry, str(local / relative))
        else:
            fs.get_file(inner, str(local))
        yield local

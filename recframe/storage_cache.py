"""Local copies of remote files and folders, made once per machine and version (``storage.cache_dir``).

Some data must be on local disk: the preprocessed binary layouts are memory-mapped, MovieLens folders
are read file by file. :func:`local_copy` turns a URL into a local path: a copy under
``<cache_dir>/<name>-<hash of the URL>/<version>/<name>``. The version is a hash of the remote
listing (every file's relative path, size and the version its store reports, ``storage.VERSION_KEYS``),
so a dataset written again (a new ``feature_map.json`` at least) is fetched again, and an unchanged
one is not: every process lists the URL, and only a new version downloads.

A copy is downloaded into ``.partial-<version>-<pid>/`` and renamed to ``<version>/`` once every file
is there with its listed size and the listing has not changed meanwhile: a folder named by a version
is always complete, and a download that was killed or failed is never taken for one (the next
download clears it). One process per machine downloads: the others wait on ``<name>-<hash>/.lock``
(an ``fcntl`` lock, released by the kernel if its holder dies) and then find the copy. Older
versions are deleted after a new one is complete (a process that still maps their files keeps
reading them: Linux frees a deleted file's pages once the last map goes).

Example:
    >>> import tempfile
    >>> from recframe import storage
    >>> storage.write_bytes("memory://doc-cache/data/a.bin", b"12345")
    >>> local = local_copy("memory://doc-cache/data", tempfile.mkdtemp())
    >>> local.name, (local / "a.bin").read_bytes()
    ('data', b'12345')
    >>> local_copy("memory://doc-cache/data", local.parents[2]) == local  # the same version: no download
    True
    >>> storage.rmtree("memory://doc-cache")
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from recframe import storage

log = logging.getLogger("recframe")

PARTIAL = ".partial-"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/recframe``, else ``~/.cache/recframe``.

    Example:
        >>> default_cache_dir().name
        'recframe'
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recframe"


def remote_listing(url: str) -> list[tuple[str, int, str]]:
    """``(relative path, size, version)`` of every file at ``url`` (a folder's files, or the file itself), sorted.

    Args:
        url: an fsspec URL.

    Raises:
        FileNotFoundError: nothing is there.

    Example:
        >>> from recframe import storage
        >>> storage.write_bytes("memory://doc-listing/x/b.txt", b"hi")
        >>> [(path, size) for path, size, _ in remote_listing("memory://doc-listing/x")]
        [('b.txt', 2)]
    """
    from fsspec.core import url_to_fs

    fs, inner = url_to_fs(url)
    fs.invalidate_cache(inner)  # another machine may have written it since this process last looked
    inner = inner.rstrip("/")
    if fs.isdir(inner):
        entries: dict[str, Any] = fs.find(inner, detail=True)
        files = {path[len(inner) + 1:]: info for path, info in entries.items() if info.get("type") != "directory"}
    elif fs.isfile(inner):
        files = {"": fs.info(inner)}
    else:
        raise FileNotFoundError(f"no such file or folder: {url}")
    return sorted((path, int(info["size"]), storage.info_version(info)) for path, info in files.items())


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def local_copy(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """``path`` itself when it is local; for a URL, the local copy of its current version (downloaded if needed).

    Args:
        path: a local path or an fsspec URL (a file or a folder).
        cache_dir: where copies go (None: :func:`default_cache_dir`).

    Raises:
        FileNotFoundError: nothing is at the URL.
        OSError: the download failed, or the files changed while they were downloaded (run again).
    """
    loc = storage.location(path)
    if isinstance(loc, Path):
        return loc
    listing = remote_listing(loc)
    version, name = _hash([loc, listing]), storage.name(loc) or "data"
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{name}-{_hash(loc)}"
    done = root / version
    if not done.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one download per machine; released if this process dies
            if not done.is_dir():  # no other process made it while this one waited
                _download(loc, listing, root, version, name)
    return done / name


def _download(url: str, listing: list[tuple[str, int, str]], root: Path, version: str, name: str) -> None:
    """Download ``listing`` from ``url`` into ``root/.partial-...``, check it, rename it ``root/<version>``."""
    from fsspec.core import url_to_fs

    for entry in root.iterdir():  # partial downloads of dead processes (the lock is held), and older versions
        if entry.is_dir() and entry.name.startswith(PARTIAL):
            shutil.rmtree(entry)
    fs, inner = url_to_fs(url)
    partial = root / f"{PARTIAL}{version}-{os.getpid()}"
    target = partial / name
    total = 0
    for relative, size, _ in listing:
        local = target / relative if relative else target
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{inner.rstrip('/')}/{relative}" if relative else inner, str(local))
        if local.stat().st_size != size:
            raise OSError(f"{url}/{relative}: downloaded {local.stat().st_size} bytes of {size}; run again")
        total += size
    if remote_listing(url) != listing:
        shutil.rmtree(partial)
        raise OSError(f"{url} changed while it was downloaded (is it being written?); run again once it is complete")
    partial.rename(root / version)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name != version and not entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)
    log.info("copied %s (%d files, %.1f MB) to %s", url, len(listing), total / 1e6, root / version / name)

"""The checkpoint folder of a run: atomic commits, a manifest written last, ``last``, pruning.

Layout of ``<run_dir>/checkpoints/``::

    step-8/                      a complete checkpoint (committed)
      .metadata  __0_0.distcp  __1_0.distcp ...   torch.distributed.checkpoint files of every rank
      manifest.json              written last: format, step, world size, every file with its size
    step-12/
    .tmp-step-16-3f9a0c1d/       a checkpoint being written (or abandoned by a killed process)
    abandoned-step-20-5f0e1a2b/  a newer checkpoint of a run that was resumed from an older step (kept, never read)

A save writes everything into a fresh ``.tmp-step-N-<id>`` folder (every rank), then rank 0
writes ``manifest.json``, fsyncs it, renames the folder to ``step-N`` and fsyncs
``checkpoints/``: a reader sees a whole checkpoint or none. (DCP's own save writes into the
target folder in place with ``.metadata`` last, so a crash while overwriting an older checkpoint
could leave a folder that looks complete and is not; recframe never writes into an existing
``step-N``.) ``last`` is the newest ``step-N`` whose manifest checks out (every listed file is
there with its size); pruning keeps the folder just written and the K-1 newest complete ones
before it (see :func:`prune`) and deletes only folders named like recframe's own
(``step-N``, ``.tmp-step-N-<hex>``), never anything else a user put there.

On an fsspec URL (``checkpoint.dir=s3://bucket/run1/checkpoints``, ``memory://``, ``file://``, see
``recframe.storage``) there is no atomic rename (an object store's "rename" copies every object):
the ranks write straight into ``step-N/`` and ``manifest.json``, written last by rank 0 after every
rank's files, is the commit marker. A ``step-N`` without a manifest is an unfinished write: ``last``
passes it over like a ``.tmp-step-N-*`` folder, and pruning deletes it once a newer checkpoint is
committed; one with a manifest that does not check out is damaged and kept, as on local disk.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> tmp = new_temp_folder(root, 4, "0a1b2c3d")
    >>> _ = (tmp / "data").write_bytes(b"x")
    >>> write_manifest(tmp, {"global_step": 4})
    >>> commit(tmp, root / "step-4")
    >>> find_last(root).folder.name
    'step-4'
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recframe import storage
from recframe.errors import RecframeError
from recframe.storage import Location

MANIFEST = "manifest.json"
FORMAT = "recframe-dcp/1"
STEP_FOLDER = re.compile(r"^step-(\d+)$")
TEMP_FOLDER = re.compile(r"^\.tmp-step-(\d+)-[0-9a-f]{8}$")


class CheckpointWriteError(RecframeError, RuntimeError):
    """A checkpoint could not be written (full disk, read-only folder, ...); the older ones are intact."""

    exit_code = 1  # the machine failed, not the input


class CheckpointReadError(RecframeError, ValueError):
    """A checkpoint cannot be loaded: unfinished, damaged, or not of this model (the message says which)."""


def marker_commit(root: Location) -> bool:
    """Whether checkpoints under ``root`` commit by their manifest alone (a URL: no atomic rename there)."""
    return not isinstance(root, Path)


def temp_folder(root: Location, step: int, token: str) -> Location:
    """Where step ``step`` is written: ``<root>/.tmp-step-<step>-<token>``, or ``<root>/step-<step>`` on a URL."""
    return storage.join(root, f"step-{step}" if marker_commit(root) else f".tmp-step-{step}-{token}")


def new_temp_folder(root: Location, step: int, token: str) -> Location:
    """Create (and return) :func:`temp_folder`; ``token``: 8 hex digits, the same on every rank."""
    if not re.fullmatch(r"[0-9a-f]{8}", token):
        raise ValueError(f"token must be 8 hex digits, got {token!r}")
    folder = temp_folder(root, step, token)
    if marker_commit(root):
        storage.makedirs(folder)
        return folder
    assert isinstance(folder, Path) and isinstance(root, Path)
    root.mkdir(parents=True, exist_ok=True)
    folder.mkdir()
    return folder


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Location, info: dict[str, Any]) -> None:
    """Write ``manifest.json`` (``info`` + format + every file's size) into ``folder``, fsynced, as its last file.

    Args:
        folder: the finished temporary checkpoint folder (on a URL: the ``step-N`` folder; the manifest commits it).
        info: JSON-serializable facts about the checkpoint (step, world size, ...).
    """
    files = {entry: storage.size(storage.join(folder, entry)) for entry, is_dir in storage.children(folder)
             if not is_dir and entry != MANIFEST}
    text = json.dumps({**info, "format": FORMAT, "files": files}, indent=2, sort_keys=True) + "\n"
    storage.write_bytes(storage.join(folder, MANIFEST), text.encode(), durable=True)
    if isinstance(folder, Path):
        _fsync_dir(folder)


def commit(temp: Location, final: Location) -> None:
    """Rename the finished ``temp`` folder to ``final`` and make the rename durable (fsync of the parent).

    On a URL ``temp`` is ``final`` and the manifest already committed it: nothing to do.

    Raises:
        FileExistsError: ``final`` exists (a checkpoint is never overwritten).
    """
    if temp == final and marker_commit(final):
        return
    assert isinstance(temp, Path) and isinstance(final, Path)
    if final.exists():
        raise FileExistsError(f"{final} exists already; checkpoints are never overwritten")
    os.rename(temp, final)
    _fsync_dir(final.parent)


def read_manifest(folder: Location) -> dict[str, Any]:
    """The manifest of a checkpoint folder, checked against the folder's files.

    Raises:
        ValueError: saying what is wrong (no manifest: the writer was stopped; a file missing or of
            another size: the folder was damaged or copied partly).
    """
    path = storage.join(folder, MANIFEST)
    if not storage.is_file(path):
        raise ValueError(f"{folder} has no {MANIFEST}: it was not finished (a process stopped while writing it?)")
    try:
        manifest = json.loads(storage.read_text(path))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint manifest")
    present = {entry for entry, is_dir in storage.children(folder) if not is_dir}
    for name, size in manifest["files"].items():
        if os.path.basename(name) != name or name not in present:
            raise ValueError(f"{folder}: file {name} listed in the manifest is missing")
        actual = storage.size(storage.join(folder, name))
        if actual != size:
            raise ValueError(f"{folder}: {name} has {actual} bytes, the manifest says {size} (truncated or damaged)")
    return manifest


@dataclass
class LastCheckpoint:
    """The newest complete checkpoint of a folder, and why newer candidates were passed over.

    Args:
        folder: the ``step-N`` folder, or None when there is no complete checkpoint.
        step: its global step (-1 when none).
        skipped: one line per newer folder that was not usable, saying why.
    """

    folder: Location | None
    step: int = -1
    skipped: list[str] = field(default_factory=list)


def find_last(root: Location) -> LastCheckpoint:
    """The newest ``step-N`` under ``root`` whose manifest checks out; unfinished newer ones are reported.

    Args:
        root: the run's ``checkpoints/`` folder (may be missing), a local path or a URL.
    """
    candidates: list[tuple[int, str]] = []
    for entry, is_dir in storage.children(root):
        match = STEP_FOLDER.match(entry) or TEMP_FOLDER.match(entry)
        if match and is_dir:
            candidates.append((int(match.group(1)), entry))
    skipped = []
    for step, entry in sorted(candidates, key=lambda c: (c[0], c[1].startswith("step-")), reverse=True):
        folder = storage.join(root, entry)
        if TEMP_FOLDER.match(entry):
            skipped.append(f"{folder} is an unfinished checkpoint of step {step} (a process stopped while writing it)")
            continue
        try:
            read_manifest(folder)
        except ValueError as error:
            skipped.append(str(error))
            continue
        return LastCheckpoint(folder, step, skipped)
    return LastCheckpoint(None, -1, skipped)


def set_aside_newer(root: Location, step: int) -> list[Location]:
    """Rename the checkpoints of steps above ``step`` to ``abandoned-<name>-<id>``; returns the new paths.

    A run resumed from step ``step`` writes its own ``step-M`` folders for later steps: the newer
    folders of the run it abandons (complete, damaged or unfinished) would otherwise be picked by
    ``last`` or stop the new run when it reaches their step. They are kept, under a name that
    ``last`` and pruning never touch, for a person to delete. Safe to call from every rank at once
    (a folder another rank renamed first is skipped).

    Args:
        root: the run's ``checkpoints/`` folder (may be missing).
        step: the step being resumed from.

    Example:
        >>> set_aside_newer(root, 10)  # doctest: +SKIP
        [PosixPath('.../checkpoints/abandoned-step-20-5f0e1a2b')]
    """
    moved = []
    for entry, is_dir in storage.children(root):
        match = STEP_FOLDER.match(entry) or TEMP_FOLDER.match(entry)
        if match is None or int(match.group(1)) <= step or not is_dir:
            continue
        target = storage.join(root, f"abandoned-{entry.lstrip('.')}-{os.urandom(4).hex()}")
        try:
            storage.move(storage.join(root, entry), target)
        except FileNotFoundError:  # another rank moved it first
            continue
        moved.append(target)
    if moved and isinstance(root, Path):
        _fsync_dir(root)
    return moved


def prune(root: Location, keep: int, current: Location) -> list[Location]:
    """Delete complete checkpoints older than the newest ``keep`` counted from ``current``; returns them.

    Policy (it can never delete ``current`` nor leave only a damaged checkpoint): ``current`` is
    the folder just committed, treated as the newest. It is kept together with the ``keep - 1``
    newest other *complete* ``step-M`` folders (manifest checks out, :func:`read_manifest`) with
    ``M < step(current)``; older complete ones are deleted. Folders of steps above ``current``
    (the abandoned future of a run resumed from an older checkpoint) and damaged ``step-N``
    folders are never counted and never deleted (a person decides). Unfinished ``.tmp-step-N-*``
    folders with ``N <= step(current)`` are leftovers of a stopped writer and are deleted (on a URL,
    so are ``step-N`` folders with no manifest at all: there they are the unfinished writes). Only
    folders named like recframe's own are touched.

    Args:
        root: the run's ``checkpoints/`` folder.
        keep: how many complete checkpoints to keep, ``current`` included (>= 1).
        current: the ``step-N`` folder just committed under ``root``.

    Example:
        >>> prune(root, 2, root / "step-12")  # doctest: +SKIP
        [PosixPath('.../step-4')]
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    match = STEP_FOLDER.match(storage.name(current))
    if match is None or storage.parent(current) != root:
        raise ValueError(f"{current} is not a step-N folder of {root}")
    newest = int(match.group(1))
    older: list[tuple[int, Location]] = []
    doomed: list[Location] = []
    for name, is_dir in storage.children(root):
        step_match, temp_match = STEP_FOLDER.match(name), TEMP_FOLDER.match(name)
        entry = storage.join(root, name)
        if not is_dir:
            continue
        if step_match and int(step_match.group(1)) < newest:
            try:
                read_manifest(entry)
            except ValueError:
                if marker_commit(root) and not storage.exists(storage.join(entry, MANIFEST)):
                    doomed.append(entry)  # an unfinished write (on a URL the manifest is the commit)
                continue
            older.append((int(step_match.group(1)), entry))
        elif temp_match and int(temp_match.group(1)) <= newest:
            doomed.append(entry)
    older.sort(key=lambda c: c[0], reverse=True)
    doomed = [f for _, f in older[keep - 1:]] + doomed
    for folder in doomed:
        storage.rmtree(folder)
    return doomed

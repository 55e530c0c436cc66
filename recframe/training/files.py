"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

JSON files stay valid JSON: a NaN or infinite number (``val/ne`` of a model whose outputs overflowed,
``val/auc`` of one class only) is written as ``null``, and the log says which key and why.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
    >>> write_json_atomic(path, {"val/auc": 0.75, "val/ne": float("nan")})
    >>> path.read_text()
    '{\\n  "val/auc": 0.75,\\n  "val/ne": null\\n}\\n'
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("recframe")


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through a temporary sibling, fsync it, then rename it into place.

    Args:
        path: the destination; its folder is created if missing.
        write: writes the content to the open binary file it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_json(data: Any, where: str = "") -> tuple[Any, list[str]]:
    """``data`` with every NaN or infinite float replaced by None, and the keys replaced.

    Args:
        data: nested dicts, lists and scalars.
        where: the key path of ``data`` (for the list of replaced keys).

    Example:
        >>> finite_json({"a": 1.0, "b": [float("inf"), 2]})
        ({'a': 1.0, 'b': [None, 2]}, ['b[0]'])
    """
    if isinstance(data, float):
        return (data, []) if math.isfinite(data) else (None, [where])
    if isinstance(data, dict):
        pairs = [(k, finite_json(v, f"{where}.{k}" if where else str(k))) for k, v in data.items()]
        return {k: v for k, (v, _) in pairs}, [key for _, (_, keys) in pairs for key in keys]
    if isinstance(data, list | tuple):
        items = [finite_json(v, f"{where}[{i}]") for i, v in enumerate(data)]
        return [v for v, _ in items], [key for _, keys in items for key in keys]
    return data, []


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically; NaN and infinities become ``null``, with a warning.

    Args:
        path: the destination.
        data: the JSON object.
    """
    data, undefined = finite_json(data)
    if undefined:
        log.warning("%s: %s not a finite number, written as null: undefined (one class only among the labels, no "
                    "samples) or overflowed (non-finite model outputs or inputs)", path,
                    ", ".join(undefined) + (" is" if len(undefined) == 1 else " are"))
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))

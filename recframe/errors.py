"""recframe's errors, and the one way a command ends on them: one message, an exit code, no traceback.

Every error that a user can fix (a bad data file, a config value, an unusable checkpoint, a plan that
does not fit) is a :class:`RecframeError`; its message names the file, line and field, or the config
key, and says what to do. Wherever it is raised (composing the config, reading data, inside
``trainer.fit``, loading a checkpoint), the command that runs catches it with :func:`reported`, prints
``recframe <command>: <message>`` on stderr and exits with the error's ``exit_code``: 2 for a user's
error, 1 for a failure of the machine (a checkpoint that cannot be written: a full disk). With
``--debug``, ``hydra.verbose=true`` or ``HYDRA_FULL_ERROR=1`` the traceback is printed too.

Example:
    >>> class BadThing(RecframeError):
    ...     '''A made-up user error.'''
    >>> one_line(BadThing("data.path=x.csv: no such file"))
    'data.path=x.csv: no such file'
    >>> try:
    ...     with reported("recframe train", stderr=sys.stdout):
    ...         raise BadThing("x.csv:3: column price: 'abc' is not a finite number")
    ... except SystemExit as stop:
    ...     print("exit", stop.code)
    recframe train: x.csv:3: column price: 'abc' is not a finite number
    exit 2
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

DEBUG_ENV = "RECFRAME_DEBUG"  # "1": print the traceback of a reported error (set by --debug, seen by every rank)


class RecframeError(Exception):
    """An error the user can fix; the message names file:line:field or the config key, and the fix.

    ``exit_code``: 2 (the input is wrong), or 1 for subclasses that report a failure of the machine.
    """

    exit_code = 2


class ConfigError(RecframeError, ValueError):
    """A config value that the builders cannot use (an unknown name, an impossible combination)."""


# torch's DataLoader raises a worker's error again as ``type(error)(text with the worker's traceback)``
_WORKER_TRACEBACK = re.compile(r"Original Traceback \(most recent call last\):\n.*\n(\w+(?:\.\w+)*): ", re.S)


def one_line(error: BaseException) -> str:
    """The message of ``error`` without a DataLoader worker's traceback around it.

    Args:
        error: the error.

    Example:
        >>> one_line(ValueError("Caught ValueError in DataLoader worker process 0.\\nOriginal Traceback "
        ...                     "(most recent call last):\\n  File 'x.py', line 1\\nValueError: x.csv:3: bad"))
        'x.csv:3: bad'
    """
    text = str(error)
    match = _WORKER_TRACEBACK.search(text)
    return text[match.end():].strip() if match else text


def find_error(error: BaseException) -> RecframeError | None:
    """``error`` or the first RecframeError among its causes (``raise ... from``) and contexts."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, RecframeError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def debug_enabled(args: list[str] | None = None) -> bool:
    """Whether a reported error also prints its traceback.

    Args:
        args: a command line: ``--debug`` or ``hydra.verbose=...`` (other than false) turn it on, as do
            ``RECFRAME_DEBUG=1`` and Hydra's own ``HYDRA_FULL_ERROR=1``.

    Example:
        >>> debug_enabled(["+experiment=dlrm", "hydra.verbose=true"]), debug_enabled(["hydra.verbose=false"])
        (True, False)
    """
    verbose = [a.split("=", 1)[1] for a in args or () if a.startswith(("hydra.verbose=", "+hydra.verbose="))]
    flag = "--debug" in (args or ()) or any(v.lower() not in ("false", "[]", "null", "") for v in verbose)
    return flag or os.environ.get(DEBUG_ENV) == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(error: RecframeError, command: str, stderr: IO[str] | None = None,
           raised: BaseException | None = None) -> int:
    """Print ``error`` as one message (after the traceback when debugging); returns its exit code.

    Args:
        error: the error.
        command: the prefix (``recframe train``).
        stderr: where to print (default ``sys.stderr``).
        raised: the error as it was caught (``error`` or one it caused), whose traceback debugging shows.
    """
    out = stderr or sys.stderr
    if debug_enabled():
        traceback.print_exception(raised or error, file=out)
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))  # several processes: the others say which
    print(f"{command}: {'' if rank == '0' else f'rank {rank}: '}{one_line(error)}", file=out, flush=True)
    return error.exit_code


@contextmanager
def reported(command: str, stderr: IO[str] | None = None) -> Iterator[None]:
    """Turn a RecframeError (or an error caused by one) raised inside into one message and ``SystemExit``.

    Args:
        command: the prefix of the message (``recframe train``).
        stderr: where to print (default ``sys.stderr``).
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 (only a RecframeError, or one caused by one, is reported)
        found = find_error(error)
        if found is None:
            raise
        raise SystemExit(report(found, command, stderr, raised=error)) from None

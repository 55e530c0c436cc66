"""Run the ``recframe`` entry point in the test's process, as the installed script would be called."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from recframe.cli import COMMAND_ENV, main


def recframe_runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                    command: str) -> Callable[..., tuple[int, str, str]]:
    """A function ``run(*args) -> (exit code, stdout, stderr)`` calling ``recframe <command> ARGS`` in-process.

    Args:
        monkeypatch: pytest's, to set ``sys.argv`` and the command's environment variable.
        capsys: pytest's, to read what the command printed.
        command: the subcommand (``train``, ``plan``, ...).

    Example:
        >>> run = recframe_runner(monkeypatch, capsys, "plan")  # doctest: +SKIP
        >>> code, out, err = run("+experiment=dlrm", "--info")  # doctest: +SKIP
    """
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/recframe"])
    monkeypatch.setenv(COMMAND_ENV, command)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as stop:  # None: success; a message: failure
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run

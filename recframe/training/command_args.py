"""The ``key=value`` arguments of recframe's serving commands (``predict``, ``retrieve``), checked in one place.

Example:
    >>> command_options(["model=m.pt2", "out=s.csv", "data.path=x.csv"], ("model", "out"), ("model", "out"),
    ...                 "recframe predict", "usage: ...")
    ({'model': 'm.pt2', 'out': 's.csv'}, ['data.path=x.csv'])
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def command_options(args: list[str], allowed: Sequence[str], required: Sequence[str], command: str,
                    usage: str) -> tuple[dict[str, str], list[str]] | None:
    """The options and the ``data.KEY=VALUE`` overrides of ``args``; None after printing every problem to stderr.

    Args:
        args: the command's arguments.
        allowed: option names (``data.*`` keys are always allowed: they override the run's data settings).
        required: options that must be given.
        command: ``recframe <name>``, the messages' prefix.
        usage: the line printed after the problems.
    """
    pairs = [a.split("=", 1) for a in args if "=" in a]
    problems = [f"{a!r} is not key=value" for a in args if "=" not in a]
    options = {k: v for k, v in pairs if not k.startswith("data.")}
    overrides = [f"{k}={v}" for k, v in pairs if k.startswith("data.")]
    problems += [f"unknown option {k!r} (options: {', '.join(allowed)}, data.KEY)" for k in options
                 if k not in allowed]
    problems += [f"{k}= is missing" for k in required if k not in options]
    if problems:
        print(f"{command}: " + "; ".join(problems) + f"\n{usage}", file=sys.stderr)
        return None
    return options, overrides

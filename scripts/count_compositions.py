"""Run one ``recframe`` command in this process, counting Hydra's compositions of its config; print one JSON line.

A composition is a call of Hydra's ``ConfigLoaderImpl.load_configuration`` (recframe's own problem finder
composes through it too). The line, on stderr when the process ends: the command, the rank (a rank that
Lightning starts runs this script again and prints its own line), the compositions and the seconds from the
start of this script. BENCHMARKS.md "Composing once (issue 18)" lists them for train, bench, plan, errors
and a sweep; run it with ``PYTHONPATH=<another checkout>`` to count another version of recframe.

Example:
    $ python scripts/count_compositions.py plan +experiment=dlrm
    {"command": "plan +experiment=dlrm", "rank": "0", "compositions": 1, "exit": 0, "wall_s": 1.6}
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from typing import Any

START = time.perf_counter()


def count_compositions() -> list[str]:
    """Make Hydra's config loader append the mode of each composition to the list returned."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    modes: list[str] = []
    load = ConfigLoaderImpl.load_configuration

    def counted(self: Any, config_name: str | None, overrides: list[str], run_mode: Any, *args: Any,
                **kwargs: Any) -> Any:
        modes.append(str(run_mode))
        return load(self, config_name, overrides, run_mode, *args, **kwargs)

    ConfigLoaderImpl.load_configuration = counted  # type: ignore[method-assign]
    return modes


def main() -> int:
    """Run ``recframe`` with this script's arguments; returns its exit code."""
    from recframe.cli import main as recframe

    modes = count_compositions()
    status = {"exit": 1}

    def summary() -> None:
        print(json.dumps({"command": " ".join(sys.argv[1:]), "rank": os.environ.get("LOCAL_RANK", "0"),
                          "compositions": len(modes), "exit": status["exit"],
                          "wall_s": round(time.perf_counter() - START, 2)}), file=sys.stderr)

    atexit.register(summary)
    try:
        status["exit"] = recframe(sys.argv[1:])
    except SystemExit as stop:
        status["exit"] = stop.code if isinstance(stop.code, int) else 1
    return status["exit"]


if __name__ == "__main__":
    sys.exit(main())

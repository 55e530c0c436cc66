"""Process bookkeeping for the failure tests, from /proc (Linux): who is alive, stopped, whose child.

Every test starts its processes in a new session (``start_new_session=True``): their process
group id is the first one's pid, Lightning's launched ranks inherit it, and :func:`kill_group`
ends them all whatever happened (stopped ones too).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
    except (OSError, IndexError):
        return None


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T = stopped, Z = zombie), None once it is gone."""
    stat = _stat(pid)
    return stat[0] if stat else None


def alive(pid: int) -> bool:
    """Running or stopped: neither gone nor a zombie (a zombie runs no code and holds no memory)."""
    return state(pid) not in (None, "Z")


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group ``pgid``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat and int(stat[2]) == pgid and stat[0] != "Z":
                out.append(int(name))
    return out


def child_of(pid: int, timeout_s: float) -> int:
    """The first child process of ``pid`` (waits up to ``timeout_s`` for it to appear)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _stat(int(name))
                if stat and int(stat[1]) == pid:
                    return int(name)
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} started no child within {timeout_s} s")


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> float:
    """Poll ``condition`` until it holds; the (monotonic) time it held; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(step_s)
    raise TimeoutError(f"not within {timeout_s} s")


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` (cleanup; stopped processes die too)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass

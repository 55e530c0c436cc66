"""Test-only fault injection: make one rank die or freeze at a named point of the collectives.

``RECFRAME_FAULT="<rank>:<point>:<n>:<action>"`` makes global rank ``<rank>`` perform ``<action>``
the ``<n>``-th time (1-based) it reaches ``<point>``. Points: ``input_dist`` (inside the input
dist, after the lengths all-to-all and before the ids all-to-all: its peers are then waiting in a
collective that this rank never joins; reached once per training or validation step). Actions:
``kill`` (SIGKILL itself, as if killed from outside), ``stop`` (SIGSTOP itself) and ``hang`` (the
main thread sleeps forever: the process lives, its watchdog heartbeats go on). The variable
is read once at import; unset (always, outside the failure tests) :func:`fault_point` only
compares one global to None.

Example:
    $ RECFRAME_FAULT=1:input_dist:3:kill recframe train +experiment=dlrm trainer.devices=2
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "RECFRAME_FAULT"
ACTIONS = ("kill", "stop", "hang")


def _parse(spec: str | None) -> tuple[int, str, int, str] | None:
    if not spec:
        return None
    try:
        rank, point, nth, action = spec.split(":")
        if action not in ACTIONS:
            raise ValueError(action)
        return int(rank), point, int(nth), action
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected <rank>:<point>:<n>:<kill|stop|hang>, "
                         "e.g. 1:input_dist:3:kill") from None


_fault = _parse(os.environ.get(FAULT_ENV))
_reached: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Mark that this process reached ``point``; injects the configured fault there (see the module docstring)."""
    if _fault is None:
        return
    import torch.distributed as dist

    rank, where, nth, action = _fault
    _reached[point] = _reached.get(point, 0) + 1
    if point != where or _reached[point] != nth or dist.get_rank() != rank:
        return
    if action == "hang":
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)

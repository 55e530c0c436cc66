"""How the ranks of a checkpoint save or load agree: collectives that also work without a process group.

A failure on one rank must reach every rank before the next collective (DCP's save and load are
collective), or the others would wait for it until the group's timeout. Each step of a save or a
load therefore ends with :func:`agree`. In one process nothing is exchanged.

Example:
    >>> rank_world()  # no process group: one process
    (0, 1)
    >>> agree("disk full"), agree(None)
    (['disk full'], [])
"""

from __future__ import annotations

import secrets

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(error: str | None) -> list[str]:
    """Every rank's error (None: fine), on every rank; nothing to exchange in one process.

    Args:
        error: this rank's error, or None.

    Returns:
        The errors, ``rank <r>: ...`` with several ranks.
    """
    if rank_world()[1] == 1:
        return [e for e in [error] if e]
    errors: list[str | None] = [None] * rank_world()[1]
    dist.all_gather_object(errors, error)
    return [f"rank {r}: {e}" for r, e in enumerate(errors) if e]


def same_token() -> str:
    """8 random hex digits, rank 0's on every rank."""
    token = [secrets.token_hex(4)]
    if rank_world()[1] > 1:
        dist.broadcast_object_list(token, src=0)
    return token[0]


def from_rank0(value: str | None) -> str | None:
    """Rank 0's ``value`` on every rank.

    Args:
        value: this rank's value (only rank 0's counts).
    """
    box = [value]
    if rank_world()[1] > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def describe(error: BaseException) -> str:
    """One line per cause (DCP's CheckpointException wraps each rank's exception with its traceback).

    Args:
        error: what a save or load step raised.

    Example:
        >>> describe(OSError(28, "No space left on device"))
        'OSError: [Errno 28] No space left on device'
    """
    if isinstance(error, CheckpointException):
        causes = {f"{type(exc).__name__}: {exc}" for exc, _ in error.failures.values()}
        return "; ".join(sorted(causes))
    return f"{type(error).__name__}: {error}"

"""A device tensor's values read on the host later, without a host sync.

Reading a CUDA tensor (``tolist``, ``item``) makes the host wait until the GPU has run every kernel queued
before it: the host, normally several steps ahead, stops feeding the GPU, which then idles while the host
works on what it read. ``DeferredRead.start`` instead starts an asynchronous copy into page-locked host memory
and records an event after it; ``ready`` polls that event (no wait) and ``tolist`` waits for it only when
asked before the copy arrived (at the end of training). A tensor elsewhere (the CPU) is read as is.

Example:
    >>> read = DeferredRead.start(torch.tensor([1.0, 2.5]))
    >>> read.ready(), read.tolist()
    (True, [1.0, 2.5])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Event(Protocol):
    """What ``DeferredRead`` needs of a ``torch.cuda.Event``."""

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


@dataclass
class DeferredRead:
    """A tensor on its way to the host.

    Args:
        host: the values on the host (page-locked when copied from a GPU; filled once ``copied`` is done).
        copied: the event recorded after the copy into ``host``; None: ``host`` holds the values already.

    Example:
        >>> DeferredRead(torch.tensor([3, 4])).tolist()
        [3, 4]
    """

    host: torch.Tensor
    copied: Event | None = None

    @classmethod
    def start(cls, tensor: torch.Tensor) -> DeferredRead:
        """Start reading ``tensor``: on CUDA an asynchronous copy into pinned host memory, an event after it.

        Args:
            tensor: the values (any device; its values must not change until the copy is done on its stream).
        """
        if not tensor.is_cuda:
            return cls(tensor)
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        return cls(host, copied)

    @property
    def deferred(self) -> bool:
        """Whether the values travel asynchronously (a GPU's), rather than being on the host from the start."""
        return self.copied is not None

    def ready(self) -> bool:
        """Whether the values reached the host (polls the event: never waits)."""
        return self.copied is None or self.copied.query()

    def tolist(self) -> Any:
        """The values as Python numbers, waiting for the copy if it has not arrived yet."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.host.tolist()

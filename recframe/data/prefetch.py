"""Overlapped input: batch i+1 reaches the GPU while batch i computes.

``DevicePrefetcher`` wraps a loader. Each time the trainer asks for a batch, it starts moving the
*next* item to the device on a side CUDA stream (a host-to-device copy from pinned memory, or a
synthetic batch made there) and hands out the item it started one call earlier, after making the
compute stream wait for that item's copy (an event, not a host synchronization). So the copy engine
and the side stream work under the current step's kernels, as in TorchRec's
``TrainPipelineSparseDist``. The batches, and so the losses, are exactly those of the plain loop.

Example:
    >>> loader = [torch.ones(2), torch.zeros(2)]
    >>> [b.tolist() for b in DevicePrefetcher(loader, torch.device("cpu"), lambda x, d: x.to(d))]
    [[1.0, 1.0], [0.0, 0.0]]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

Materialize = Callable[[Any, torch.device], Any]


def _record_stream(batch: Any, stream: torch.cuda.Stream) -> None:
    """Tell the caching allocator that ``stream`` uses the batch's tensors (made on another stream)."""
    if hasattr(batch, "record_stream"):  # a Tensor, a Batch
        batch.record_stream(stream)


class DevicePrefetcher:
    """A loader whose items arrive on ``device`` one step ahead, on a side stream (CUDA only).

    On a non-CUDA device it only applies ``materialize`` in order (there is nothing to overlap).
    Length and ``state_dict`` are the wrapped loader's, so Lightning treats it as that loader.

    Args:
        loader: yields host items (Batches, or synthetic batch requests).
        device: the training device.
        materialize: ``(item, device) -> batch on device``; called on the side stream.

    Example:
        >>> fetch = DevicePrefetcher(range(3), torch.device("cpu"), lambda x, d: torch.tensor([x], device=d))
        >>> [int(b) for b in fetch]
        [0, 1, 2]
    """

    def __init__(self, loader: Iterable[Any], device: torch.device, materialize: Materialize) -> None:
        self.loader = loader
        self.device = device
        self.materialize = materialize

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]  # TypeError for an endless loader, as len() expects

    def state_dict(self) -> dict[str, Any]:
        """The wrapped loader's state (Lightning saves it with a checkpoint)."""
        inner = getattr(self.loader, "state_dict", None)
        return inner() if inner is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the wrapped loader's state."""
        inner = getattr(self.loader, "load_state_dict", None)
        if inner is not None:
            inner(state_dict)

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            for item in self.loader:
                yield self.materialize(item, self.device)
            return
        side = torch.cuda.Stream(self.device)
        items = iter(self.loader)
        in_flight: deque[tuple[Any, torch.cuda.Event]] = deque()

        def start_next() -> None:
            item = next(items, _END)
            if item is _END:
                return
            with torch.cuda.stream(side):
                batch = self.materialize(item, self.device)
                ready = torch.cuda.Event()
                ready.record(side)
            in_flight.append((batch, ready))

        start_next()
        while in_flight:
            batch, ready = in_flight.popleft()
            start_next()  # the next item's copy runs under this one's step
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(ready)
            _record_stream(batch, compute)
            yield batch


_END = object()

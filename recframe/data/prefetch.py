"""Overlapped input: batch i+1 reaches the GPU (and starts its input all-to-all) while batch i computes.

``DevicePrefetcher`` wraps a loader. Each time the trainer asks for a batch, it starts moving the
*next* item to the device (on CUDA on a side stream: a host-to-device copy from pinned memory, or a
synthetic batch made there), runs the optional ``on_ready`` callback on that next batch (the
training side starts the batch's input all-to-all there, so that it travels under the current
step), and hands out the item it started one call earlier, on CUDA after making the compute stream
wait for that item's copy and callback (an event, not a host synchronization). So the copy engine,
the side stream and the network work under the current step's kernels, as in TorchRec's
``TrainPipelineSparseDist``. The batches, and so the losses, are exactly those of the plain loop.
On other devices the lookahead is the same, without streams.

Example:
    >>> loader = [torch.ones(2), torch.zeros(2)]
    >>> [b.tolist() for b in DevicePrefetcher(loader, torch.device("cpu"), lambda x, d: x.to(d))]
    [[1.0, 1.0], [0.0, 0.0]]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

Materialize = Callable[[Any, torch.device], Any]
OnReady = Callable[[Any], None]


def _record_stream(batch: Any, stream: torch.cuda.Stream) -> None:
    """Tell the caching allocator that ``stream`` uses the batch's tensors (made on another stream)."""
    if hasattr(batch, "record_stream"):  # a Tensor, a Batch
        batch.record_stream(stream)


class DevicePrefetcher:
    """A loader whose items arrive on ``device`` one step ahead (on CUDA on a side stream).

    When item ``i`` is handed out, item ``i + 1`` is already materialized and ``on_ready`` ran on
    it. Length and ``state_dict`` are the wrapped loader's, so Lightning treats it as that loader.

    Args:
        loader: yields host items (Batches, or synthetic batch requests).
        device: the training device.
        materialize: ``(item, device) -> batch on device``; called on the side stream.
        on_ready: called with each materialized batch, one item before it is handed out (on CUDA on
            the side stream, after the batch's copy); None: nothing.

    Example:
        >>> seen = []
        >>> fetch = DevicePrefetcher(range(3), torch.device("cpu"), lambda x, d: torch.tensor([x], device=d),
        ...                          on_ready=lambda b: seen.append(int(b)))
        >>> [(int(b), list(seen)) for b in fetch]
        [(0, [0, 1]), (1, [0, 1, 2]), (2, [0, 1, 2])]
    """

    def __init__(self, loader: Iterable[Any], device: torch.device, materialize: Materialize,
                 on_ready: OnReady | None = None) -> None:
        self.loader = loader
        self.device = device
        self.materialize = materialize
        self.on_ready = on_ready

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
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        items = iter(self.loader)
        ahead = self._start(next(items, _END), side)
        while ahead is not None:
            batch, ready = ahead
            ahead = self._start(next(items, _END), side)  # the next item's copy runs under this one's step
            if ready is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(ready)
                _record_stream(batch, compute)
            yield batch

    def _start(self, item: Any, side: torch.cuda.Stream | None) -> tuple[Any, torch.cuda.Event | None] | None:
        """Materialize ``item`` and run ``on_ready`` on it (on CUDA on ``side``, then an event); None at the end."""
        if item is _END:
            return None
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            batch = self.materialize(item, self.device)
            if self.on_ready is not None:
                self.on_ready(batch)
            if side is None:
                return batch, None
            ready = torch.cuda.Event()
            ready.record(side)
        return batch, ready


_END = object()

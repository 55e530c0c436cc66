"""Training scalars read on the host without stopping the GPU: summed on the device, copied at logging steps.

Logging a loss every step the usual way (``self.log(loss)``) makes the host read it, a wait for every
queued kernel, and costs Lightning's per-call bookkeeping each step. ``StepScalars`` instead adds each
step's values into device tensors (one small kernel per scalar); at a logging step it closes the window:
the window's means start an asynchronous copy into page-locked host memory, and the values are handed
out once that copy is done (polled with an event, never waited for inside a step). On the CPU a closed
window is ready at once.

Example:
    >>> scalars = StepScalars()
    >>> scalars.add({"train/loss": torch.tensor(0.5)})
    >>> scalars.add({"train/loss": torch.tensor(0.25)})
    >>> scalars.close(step=1)
    >>> scalars.ready()
    [(1, {'train/loss': 0.375})]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from recframe.training.deferred_read import DeferredRead


@dataclass
class _Window:
    step: int
    names: list[str]
    means: DeferredRead  # the window's means on their way to the host


class StepScalars:
    """Per-step scalars averaged over each logging window, delivered to the host without a sync."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0
        self._windows: deque[_Window] = deque()

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """Add one step's scalar tensors (detached; any device)."""
        for name, value in values.items():
            value = value.detach().float()
            if name in self._sums:
                self._sums[name].add_(value)
            else:
                self._sums[name] = value.clone()
        self._steps += 1

    def close(self, step: int) -> None:
        """End the window at ``step``: its means start their way to the host (nothing if the window is empty)."""
        if not self._steps:
            return
        names = list(self._sums)
        means = torch.stack([self._sums[name] for name in names]) / self._steps
        self._windows.append(_Window(step, names, DeferredRead.start(means)))
        self._sums, self._steps = {}, 0

    def ready(self, wait: bool = False) -> list[tuple[int, dict[str, float]]]:
        """The closed windows whose values reached the host, oldest first, as ``(step, {name: mean})``.

        Args:
            wait: wait for every closed window (the end of training), instead of only taking the arrived ones.
        """
        out = []
        while self._windows:
            window = self._windows[0]
            if not wait and not window.means.ready():
                break
            self._windows.popleft()
            out.append((window.step, dict(zip(window.names, window.means.tolist(), strict=True))))
        return out

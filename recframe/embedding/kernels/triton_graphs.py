"""CUDA graphs of the triton backend's backward: the sort and the two update launches replayed as one.

Why: a small step is host-bound. On the dlrm shape (26 features, batch 2048, 53k lookups) the
backward is ~10 launches (the sort's cub kernels and memsets, two Triton launches) that cost
~200 us of host time on an H200 machine for ~40 us of GPU work; a replay costs ~10 us.

How (``BackwardGraphs``, one per kernel):

- A *shape* is ``(number of lookups, weighted)``. A forward that will be trained (autograd on)
  asks ``claim``; the ``CAPTURE_AFTER``-th time a shape is seen it gets an ``Entry``: static
  buffers that the forward writes its keys and gradient rows into, and one-element int64 tensors
  that hold the addresses of the output gradient and the per-id weights, which change every
  step: the kernels read them through these (``INDIRECT`` in ``triton_kernels``), written only
  when they changed (the caching allocator often hands out the same block every step).
- The first backward of an entry runs its launches eagerly through the entry's buffers (which
  also compiles the kernels before the capture), then captures them (thread-local capture mode,
  in the kernel's private memory pool, which its graphs share: they run one at a time and keep
  nothing); later backwards write the addresses that changed (one fill launch each) and replay.
- An entry belongs to one forward (a ``Claim``) until its backward has run or the forward's
  autograd graph is freed. A second lookup of the same shape before that backward (two
  micro-batches, a shared collection called twice) gets fresh buffers and runs eagerly. A
  backward whose entry was claimed again since (a retained graph backpropagated once more after
  another forward) raises instead of reading the newer keys.
- Graphs hold the addresses of the weight and optimizer states: if those change (``module.to``,
  a new tensor assigned), every graph is dropped and shapes are captured anew.
- Inside a caller's own capture (a whole training step graphed by the user) no graph is captured
  or replayed: the eager launches are what that capture records.

Limits: only optimizers without a step count (sgd, adagrad, rowwise_adagrad; adam's bias
correction changes every step and is a launch argument); at most ``MAX_GRAPHS`` shapes per
kernel (a stream of ever-new shapes, e.g. multi-hot bags of random sizes, runs eagerly) and
``MAX_LOOKUPS`` lookups (above it the GPU work hides the launches; a graph would only pin its
memory). ``RECFRAME_CUDA_GRAPHS=0`` turns graphs off (for debugging; the results are the same).

Example:
    >>> graphs = BackwardGraphs(enabled=False)  # on CPU: never claims, every backward is eager
    >>> graphs.claim(10, False, lambda n, weighted: None) is None
    True
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

CAPTURE_AFTER = 2  # a shape's backward is captured the second time the shape is trained
MAX_GRAPHS = 8  # shapes with a graph, per kernel
MAX_LOOKUPS = 1 << 20  # larger batches run eagerly (GPU-bound: the launches are hidden)


def graphs_allowed() -> bool:
    """False where ``RECFRAME_CUDA_GRAPHS=0`` turns the triton backward's CUDA graphs off."""
    return os.environ.get("RECFRAME_CUDA_GRAPHS", "1") != "0"


def _capturing() -> bool:
    """Whether the current CUDA stream is being captured into a graph (by the caller: never nest captures)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


@dataclass(eq=False)
class Entry:
    """The static inputs of one shape's graph, and the graph once captured.

    Args:
        keys: the lookups' rows, written by the forward.
        grad_rows: the output-gradient row of each lookup (pooled kernels), written by the forward.
        grad_at: int64 ``[1]``, the address of the output gradient (set before each replay).
        weights_at: int64 ``[1]``, the address of the per-id weights (weighted shapes), else None.
    """

    keys: torch.Tensor
    grad_rows: torch.Tensor | None
    grad_at: torch.Tensor
    weights_at: torch.Tensor | None
    graph: torch.cuda.CUDAGraph | None = None
    owner: weakref.ref | None = None  # the live Claim on the buffers, if any
    generation: int = 0  # claims handed out so far
    dropped: bool = False
    pointers: tuple[int, ...] = field(default=())  # the table storage's addresses when captured
    addresses: tuple[int, int] = (0, 0)  # what grad_at and weights_at hold now


class Claim:
    """A forward's hold on an entry's buffers; its backward hands it back to ``BackwardGraphs.run``."""

    __slots__ = ("entry", "generation", "__weakref__")

    def __init__(self, entry: Entry) -> None:
        entry.generation += 1
        self.entry = entry
        self.generation = entry.generation
        entry.owner = weakref.ref(self)


class BackwardGraphs:
    """The captured backwards of one kernel, by shape (see the module docstring).

    Args:
        enabled: whether this kernel may capture (CUDA, compiled kernels, no step count, not turned off).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._entries: dict[tuple[int, bool], Entry] = {}
        self._seen: dict[tuple[int, bool], int] = {}
        self._pool = None

    def claim(self, num_lookups: int, weighted: bool,
              new_entry: Callable[[int, bool], Entry]) -> Claim | None:
        """A claim on the static buffers of this shape, or None (eager: fresh buffers, no graph).

        Args:
            num_lookups: ids in the batch.
            weighted: whether the lookups carry per-id weights.
            new_entry: builds the entry of a shape the first time it is captured.
        """
        if not self.enabled or not 0 < num_lookups <= MAX_LOOKUPS:
            return None
        shape = (num_lookups, weighted)
        entry = self._entries.get(shape)
        if entry is None:
            seen = self._seen.get(shape, 0) + 1
            if seen < CAPTURE_AFTER or len(self._entries) >= MAX_GRAPHS or _capturing():
                if len(self._seen) >= 1024:  # ever-new shapes: forget, do not grow
                    self._seen.clear()
                self._seen[shape] = seen
                return None
            entry = self._entries[shape] = new_entry(num_lookups, weighted)
        if entry.owner is not None and entry.owner() is not None:
            return None  # its buffers hold another forward's lookups, not yet backpropagated
        return Claim(entry)

    def run(self, claim: Claim, grad: torch.Tensor, weights: torch.Tensor | None, pointers: tuple[int, ...],
            launch: Callable[[], None]) -> bool:
        """Replay (capturing first if needed) the backward of a claimed forward; False: run it eagerly.

        Args:
            claim: what the forward got from ``claim``.
            grad: the fp32 output gradient (its address goes to the graph).
            weights: the fp32 per-id weights (weighted shapes), else None.
            pointers: the addresses of the weight and optimizer states now (a change drops every graph).
            launch: the backward's launches reading the entry's buffers (``INDIRECT``), to capture.

        Raises:
            RuntimeError: the entry's buffers were claimed by a later forward since this one ran.
        """
        entry = claim.entry
        if entry.generation != claim.generation:
            raise RuntimeError(
                "triton embedding backend: this backward's lookups were overwritten by a later forward of the same "
                "batch shape (a retained autograd graph backpropagated again after another forward); set "
                "RECFRAME_CUDA_GRAPHS=0 for this use")
        entry.owner = None
        grad_address, weights_address = grad.data_ptr(), 0 if weights is None else weights.data_ptr()
        if entry.dropped or grad_address % 16 or weights_address % 16 or _capturing():
            return False  # (the kernels read the addresses as 16-byte aligned, like tensor arguments)
        if entry.graph is not None and entry.pointers != pointers:
            log.info("triton backward graphs dropped: the table storage moved; capturing again")
            self._drop()
            return False
        if entry.addresses != (grad_address, weights_address):  # often the same block of the caching allocator
            entry.grad_at.fill_(grad_address)
            if weights is not None:
                entry.weights_at.fill_(weights_address)
            entry.addresses = (grad_address, weights_address)
        if entry.graph is None:
            launch()  # this step's update, run eagerly; it also compiles the INDIRECT kernels before the capture
            entry.graph = self._capture(launch)
            entry.pointers = pointers
            return True
        entry.graph.replay()
        return True

    def _capture(self, launch: Callable[[], None]) -> torch.cuda.CUDAGraph | None:
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                launch()
        except Exception as err:  # never fail training for an optimization: run eagerly from now on
            log.warning("triton backward: CUDA graph capture failed (%s: %s); running eagerly", type(err).__name__,
                        err)
            self.enabled = False
            self._drop()
            return None
        return graph

    def _drop(self) -> None:
        for entry in self._entries.values():
            entry.dropped = True
            entry.graph = None
        self._entries.clear()
        self._seen.clear()

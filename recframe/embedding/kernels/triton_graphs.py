"""CUDA graphs of the triton backend's backward: the sort and the two update launches replayed as one.

Why: a small step is host-bound. On the dlrm shape (26 features, batch 2048, 53k lookups) the
backward is ~10 launches (the sort's cub kernels and memsets, two Triton launches) that cost
~200 us of host time on an H200 machine for ~40 us of GPU work; a replay costs ~10 us.

How (``BackwardGraphs``, one per kernel):

- A *shape* is ``(number of lookups, weighted, gradient dtype)`` (the gradient's dtype is the
  output's: fp32, or autocast's bf16/fp16; the kernels load it in that dtype, so a graph captured
  for one never replays on another). A forward that will be trained (autograd on)
  asks ``claim``; a shape trained twice in a row (by this kernel) gets an ``Entry``: static
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
- Graphs hold the addresses of the weight and optimizer states and the optimizer's settings (lr,
  eps, weight decay, betas): if any changes (``module.to``, a new tensor assigned, a new lr),
  every graph is dropped, before a forward writes a buffer, and shapes are captured anew.
- The step that captures synchronizes the device once (per shape); a copied module (deepcopy,
  pickle) starts without graphs.
- Inside a caller's own capture (a whole training step graphed by the user) no graph is captured
  or replayed: the eager launches are what that capture records.

Limits: only optimizers without a step count (sgd, adagrad, rowwise_adagrad; adam's bias
correction changes every step and is a launch argument); at most ``MAX_GRAPHS`` shapes per
kernel (a stream of ever-new shapes, e.g. multi-hot bags of random sizes, runs eagerly) and
``MAX_LOOKUPS`` lookups (above it the GPU work hides the launches; a graph would only pin its
memory); one stream (graphs replay on the stream of the backward; steps that hop between streams
unsynchronized are not supported). ``RECFRAME_CUDA_GRAPHS=0`` when a kernel is built turns graphs
off for it (for debugging; the results are the same).

Example:
    >>> graphs = BackwardGraphs(enabled=False)  # on CPU: never claims, every backward is eager
    >>> graphs.claim(10, False, (), lambda n, weighted, dtype: None) is None
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
        grad_dtype: the dtype of the output gradient at ``grad_at`` (the captured kernels load it so).
    """

    keys: torch.Tensor
    grad_rows: torch.Tensor | None
    grad_at: torch.Tensor
    weights_at: torch.Tensor | None
    grad_dtype: torch.dtype = torch.float32
    graph: torch.cuda.CUDAGraph | None = None
    owner: weakref.ref | None = None  # the live Claim on the buffers, if any
    generation: int = 0  # claims handed out so far
    dropped: bool = False
    fingerprint: tuple = field(default=())  # what the kernel's storage and settings were when the entry was made
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
            Setting it to False later stops claims; backwards of claimed forwards still finish.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._entries: dict[tuple[int, bool, torch.dtype], Entry] = {}
        self._last_shape: tuple[int, bool, torch.dtype] | None = None
        self._pool = None
        self._stream: torch.cuda.Stream | None = None

    def __deepcopy__(self, memo: dict) -> BackwardGraphs:
        """A copied module (EMA, SWA) starts without graphs: they hold the original's storage, and cannot be copied."""
        return BackwardGraphs(self.enabled)

    def __getstate__(self) -> dict:
        return {"enabled": self.enabled}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["enabled"])

    def claim(self, num_lookups: int, weighted: bool, fingerprint: tuple,
              new_entry: Callable[[int, bool, torch.dtype], Entry], grad_dtype: torch.dtype = torch.float32,
              ) -> Claim | None:
        """A claim on the static buffers of this shape, or None (eager: fresh buffers, no graph).

        Args:
            num_lookups: ids in the batch.
            weighted: whether the lookups carry per-id weights.
            fingerprint: what a graph bakes in: the table storage's addresses and the optimizer's settings;
                a change drops every graph before the forward writes any buffer.
            new_entry: builds the entry of a shape the first time it is trained twice in a row.
            grad_dtype: the dtype the output gradient will have (the output's): part of the shape.
        """
        if not self.enabled or not 0 < num_lookups <= MAX_LOOKUPS:
            return None
        shape, last = (num_lookups, weighted, grad_dtype), self._last_shape
        self._last_shape = shape
        entry = self._entries.get(shape)
        if entry is not None and entry.fingerprint != fingerprint:
            log.info("triton backward graphs dropped: the table storage or optimizer settings changed")
            self._drop()
            return None
        if _capturing():
            return None  # inside a caller's own CUDA graph capture, the eager launches are what it records
        if entry is None:
            if shape != last or len(self._entries) >= MAX_GRAPHS:
                return None  # shapes that do not repeat step after step (random bag sizes) stay eager
            entry = self._entries[shape] = new_entry(num_lookups, weighted, grad_dtype)
            entry.fingerprint = fingerprint
        if entry.owner is not None and entry.owner() is not None:
            return None  # its buffers hold another forward's lookups, not yet backpropagated
        return Claim(entry)

    def run(self, claim: Claim, grad: torch.Tensor, weights: torch.Tensor | None, fingerprint: tuple,
            launch: Callable[[], None]) -> bool:
        """Replay (capturing first if needed) the backward of a claimed forward; False: run it eagerly.

        Args:
            claim: what the forward got from ``claim``.
            grad: the output gradient, in the claimed shape's dtype (its address goes to the graph; another dtype
                runs eagerly).
            weights: the fp32 per-id weights (weighted shapes), else None.
            fingerprint: as for ``claim``, now (a change since the forward drops every graph).
            launch: the backward's launches reading the entry's buffers (``INDIRECT``), to capture.

        Raises:
            RuntimeError: the entry's buffers were claimed by a later forward since this one ran.
        """
        entry = claim.entry
        if entry.generation != claim.generation:
            raise RuntimeError(
                "triton embedding backend: this backward's lookups were overwritten by a later forward of the same "
                "batch shape (a retained autograd graph backpropagated again after another forward); build the "
                "collection with RECFRAME_CUDA_GRAPHS=0 set for this use")
        entry.owner = None
        grad_address, weights_address = grad.data_ptr(), 0 if weights is None else weights.data_ptr()
        if (entry.dropped or grad.dtype != entry.grad_dtype or grad_address % 16 or weights_address % 16
                or _capturing()):
            return False  # (the kernels read the addresses as 16-byte aligned, like tensor arguments)
        if entry.fingerprint != fingerprint:
            log.info("triton backward graphs dropped: the table storage or optimizer settings changed")
            self._drop()
            return False
        if entry.addresses != (grad_address, weights_address):  # often the same block of the caching allocator
            entry.grad_at.fill_(grad_address)
            if weights is not None:
                entry.weights_at.fill_(weights_address)
            entry.addresses = (grad_address, weights_address)
        if entry.graph is None:
            launch()  # this step's update, run eagerly; it also compiles the INDIRECT kernels before the capture
            entry.graph = self._capture(launch, grad.device)
            return True
        entry.graph.replay()
        return True

    def _capture(self, launch: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph | None:
        """The launches captured on a side stream of ``device`` (None, and graphs off, if the capture fails)."""
        torch.cuda.synchronize(device)  # an earlier asynchronous error surfaces here as itself, not as a failed capture
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
                self._stream = torch.cuda.Stream(device=device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(self._stream):  # restored on the way out, failed capture or not
                try:
                    graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
                    launch()
                finally:
                    graph.capture_end()  # also ends a capture that failed half-begun (the RNG's capture state)
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
        self._pool = None  # a pool whose graphs are all freed cannot take a new capture: the next one gets its own

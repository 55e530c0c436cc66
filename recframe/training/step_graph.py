"""A training step's forward, loss and backward as one CUDA graph, captured once and replayed every step.

Why: a small step is host-bound. On the ``dlrm`` shape (batch 2048) a step is ~220 kernel launches
whose Python and launch costs (~6 ms on an H200 machine) exceed the GPU's work (~2 ms); a replay is
one launch. TorchRec has no such path; HugeCTR graphs its whole step.

How (``GraphedStep``):

- The first ``warmup_steps`` steps of a batch layout run eagerly (kernels compile, the caching
  allocator and cuBLAS settle, the triton backend's own backward graphs exist).
- The next step of that layout is captured on a side stream (thread-local capture mode, its own
  memory pool): a static copy of the batch goes in; the losses and every dense parameter's
  ``.grad`` (in the graph's memory) come out. The embeddings' fused sparse update is part of the
  captured backward. The step is then replayed, which trains on that batch.
- From then on a step copies the batch into the static one (a copy per tensor) and replays. The
  dense optimizer and the learning-rate schedule stay eager (Lightning's optimizer step, after the
  replay), reading the gradients the replay wrote; so do gradient clipping and logging.
- A batch of another layout (a last partial batch) runs eagerly; the parameters get its gradients
  for the optimizer step. Every replay points the parameters' ``.grad`` back at the graph's
  gradients (Lightning sets them to None before validation; an eager step leaves its own).
- A graph holds addresses: if a parameter's or buffer's storage moved (``module.to``, a state
  load that assigned new tensors), the graph is dropped and captured again after a warmup.
- A capture that fails (an operation that waits for the host, say) is logged with its reason and
  training goes on eagerly.

A replay runs the same kernels on the same inputs as the eager step, so losses and weights are
those of the eager step (tests/gpu/test_step_graph.py). What rules a graph out is listed by
``graph_blockers``: several processes (the all-to-alls are not captured), 16-bit mixed precision
(its loss scaler syncs), embedding kernels with per-step host state (fbgemm's; a sparse optimizer
with a step count: adam, rowwise_adam, lamb).

Example:
    >>> step = GraphedStep(lambda batch: (model(batch).sum(), {}), params, model)  # doctest: +SKIP
    >>> total, parts = step(batch)  # gradients are in p.grad; then optimizer.step()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from recframe.sparse import Batch

log = logging.getLogger("recframe")

LossFn = Callable[[Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def graph_blockers(model: nn.Module, device: torch.device, world_size: int, precision: str) -> list[str]:
    """Why a training step of ``model`` cannot be one CUDA graph here (empty: it can).

    Args:
        model: the built model (its embedding collections say whether their kernels can be replayed).
        device: the training device.
        world_size: processes of the run.
        precision: Lightning's precision setting (``32-true``, ``bf16-mixed``, ``16-mixed``, ...).

    Example:
        >>> graph_blockers(nn.Linear(2, 2), torch.device("cpu"), 1, "32-true")
        ['the step runs on cpu, not on a CUDA GPU']
    """
    reasons = []
    if device.type != "cuda":
        reasons.append(f"the step runs on {device.type}, not on a CUDA GPU")
    if world_size > 1:
        reasons.append(f"{world_size} processes: the embeddings' all-to-alls are not captured")
    if precision.startswith("16"):
        reasons.append(f"precision={precision}: its loss scaler reads the gradients' finiteness on the host")
    for path, module in model.named_modules():
        unsafe = getattr(module, "graph_unsafe_tables", None)
        tables = unsafe() if unsafe is not None else []
        if tables:
            named = ", ".join(tables[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")
            reasons.append(f"the kernels of embedding tables {named} ({path or 'model'}) keep per-step host state "
                           "(fbgemm's, or a sparse optimizer with a step count: adam, rowwise_adam, lamb)")
    return reasons


class GraphedStep:
    """Forward, loss and backward of a training step, replayed from one CUDA graph (module docstring).

    Args:
        loss_fn: ``batch -> (total loss, {task: loss})``, the step's forward (autograd on).
        params: the parameters whose gradients the step leaves in ``.grad`` (the dense ones).
        model: the module whose parameters' and buffers' addresses a graph bakes in.
        warmup_steps: eager steps of a batch layout before it is captured.

    Example:
        >>> step = GraphedStep(loss_fn, dense_parameters(model), model)  # doctest: +SKIP
    """

    def __init__(self, loss_fn: LossFn, params: list[nn.Parameter], model: nn.Module, warmup_steps: int = 3) -> None:
        self.loss_fn = loss_fn
        self.params = params
        self.model = model
        self.warmup_steps = warmup_steps
        self.enabled = True
        self.captures = 0  # graphs captured so far
        self.eager_steps = 0  # steps run eagerly (warmup, other layouts)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._layout: tuple | None = None  # the captured layout, or the layout being warmed up
        self._repeats = 0  # consecutive steps of ``_layout`` before the capture
        self._static: Batch | None = None
        self._outputs: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._grads: list[torch.Tensor | None] = []
        self._addresses: tuple[int, ...] = ()
        self._stream: torch.cuda.Stream | None = None

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run one step's forward, loss and backward; returns the losses (detached; a replay's are overwritten
        by the next step: copy them to keep them). The gradients are in the parameters' ``.grad``."""
        if not self.enabled:
            return self._eager(batch)
        layout = batch.layout()
        if self._graph is not None and self._addresses != self._storage():
            log.info("training step graph dropped: the model's storage moved; capturing it again")
            self._drop()
        if self._graph is not None:
            if layout != self._layout:
                return self._eager(batch)
            return self._replay(batch)
        self._repeats = self._repeats + 1 if layout == self._layout else 1
        self._layout = layout
        if self._repeats <= self.warmup_steps:
            return self._eager(batch)
        return self._capture(batch)

    # ---- internals ----------------------------------------------------------------------------
    def _forward_backward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step's math; the backward outside autocast (as Lightning's). Autocast's cast cache is off in every
        step, eager or captured: a capture must not keep casts cached outside the graph, and torch.compile'd
        towers guard on that setting (a change between the warmup and the capture would recompile them inside
        the capture, which fails)."""
        with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"),
                            cache_enabled=False):
            total, parts = self.loss_fn(batch)
        with torch.autocast("cuda", enabled=False):
            total.backward()
        return total.detach(), {name: value.detach() for name, value in parts.items()}

    def _eager(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.eager_steps += 1
        for p in self.params:
            p.grad = None
        return self._forward_backward(batch)

    def _replay(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self._graph is not None and self._static is not None and self._outputs is not None
        for p, grad in zip(self.params, self._grads, strict=True):
            if p.grad is not grad:  # None (Lightning's zero_grad before validation) or an eager step's own
                p.grad = grad  # the optimizer must read the gradients the replay writes
        self._static.copy_(batch)
        self._graph.replay()
        return self._outputs

    def _capture(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        static = batch.clone()
        for p in self.params:
            p.grad = None
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        self._stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                outputs = self._forward_backward(static)
        except Exception as err:  # never fail training for an optimization
            log.warning("training step graph: the capture failed (%s: %s); training eagerly from now on",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            log.debug("training step graph: the capture's error", exc_info=True)
            self.enabled = False
            return self._eager(batch)
        self.captures += 1
        self._graph, self._static, self._outputs = graph, static, outputs
        self._grads = [p.grad for p in self.params]
        self._addresses = self._storage()
        log.info("training step: one CUDA graph (forward, loss, backward), captured after %d eager steps",
                 self.eager_steps)
        graph.replay()  # this step's batch, trained
        return outputs

    def _storage(self) -> tuple[int, ...]:
        """The addresses a graph bakes in: every parameter's and buffer's storage."""
        return tuple(t.data_ptr() for t in (*self.model.parameters(), *self.model.buffers()))

    def _drop(self) -> None:
        self._graph = self._static = self._outputs = None
        self._grads, self._layout, self._repeats = [], None, 0

"""Sparse row updates of the fused optimizers: the math of the torch backend, equal to fbgemm's.

Every update is *exact* in fbgemm's sense: the gradients of all lookups of a row in one batch
(duplicates within a bag and across bags and features of a shared table) are first summed into
one gradient ``g`` per touched row, then the row is updated once. Rows that were not looked up
are not touched (lazy updates: no decay, no moment decay for them). Arithmetic is fp32; the new
row is rounded to the storage dtype (round to nearest). ``t`` is the optimizer step, counted from
1 (fbgemm's ``iter``); ``lr``, ``eps``, ``wd`` = weight_decay, ``b1, b2`` = betas. Per touched row
``w`` (a vector of width D), elementwise unless noted:

- ``sgd``: ``w -= lr * g``.
- ``adagrad`` (state ``momentum1[rows, D]``): ``m += g^2; w -= lr * g / (sqrt(m) + eps)``.
- ``rowwise_adagrad`` (state ``momentum1[rows]``): ``g' = g + wd * w`` for mode l2, else ``g``;
  ``m += mean(g'^2)`` (the mean over the row, as fbgemm); ``k = lr / (sqrt(m) + eps)``;
  ``c = 1 - k * wd`` (l2), ``1 - lr * wd`` (decoupled), 1 (no decay); ``w = c * w - k * g``.
- ``adam`` (states ``momentum1, momentum2 [rows, D]``): ``m1 = b1 m1 + (1 - b1) g``;
  ``m2 = b2 m2 + (1 - b2) g^2``; ``w -= lr * (m1 / (1 - b1^t) / (sqrt(m2 / (1 - b2^t)) + eps) + wd * w)``.
- ``rowwise_adam`` (fbgemm's PARTIAL_ROWWISE_ADAM; ``momentum1[rows, D]``, ``momentum2[rows]``):
  ``m1`` as adam; ``m2 = b2 m2 + (1 - b2) mean(g^2)``; the adam step with that row scalar.
- ``lamb`` (``momentum1, momentum2 [rows, D]``): ``m1, m2`` as adam;
  ``r = m1 / (1 - b1^t) / (sqrt(m2 / (1 - b2^t)) + eps) + wd * w``;
  ``w -= lr * (||w|| / ||r||) * r`` with row norms of the weight before the update.

Bias correction uses the global step ``t`` of the table group (as fbgemm), not a per-row count.

Example:
    >>> import torch
    >>> from recframe.embedding.config import SparseOptimizer
    >>> w = torch.zeros(4, 2)
    >>> states = new_states("sgd", 4, 2, w.device)
    >>> sparse_update(SparseOptimizer(name="sgd", lr=0.5), w, states, torch.tensor([1]), torch.ones(1, 2), step=1)
    >>> w[1]
    tensor([-0.5000, -0.5000])
"""

from __future__ import annotations

import torch

from recframe.embedding.config import SparseOptimizer
from recframe.vocab import OptimizerName, WeightDecayMode

# For each optimizer: its state names and whether each state is one value per row (True) or per element.
STATE_LAYOUT: dict[OptimizerName, tuple[tuple[str, bool], ...]] = {
    OptimizerName.sgd: (),
    OptimizerName.adagrad: (("momentum1", False),),
    OptimizerName.rowwise_adagrad: (("momentum1", True),),
    OptimizerName.adam: (("momentum1", False), ("momentum2", False)),
    OptimizerName.rowwise_adam: (("momentum1", False), ("momentum2", True)),
    OptimizerName.lamb: (("momentum1", False), ("momentum2", False)),
}
# Optimizers whose update depends on the step count (bias correction); their state dict has "step".
USES_STEP = frozenset({OptimizerName.adam, OptimizerName.rowwise_adam, OptimizerName.lamb})


def new_states(name: OptimizerName, rows: int, dim: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Zero-initialized fp32 optimizer states for ``rows`` rows of width ``dim``.

    Args:
        name: optimizer name (a key of STATE_LAYOUT).
        rows: number of rows.
        dim: row width.
        device: where the states live.
    """
    return {
        state: torch.zeros((rows,) if rowwise else (rows, dim), dtype=torch.float32, device=device)
        for state, rowwise in STATE_LAYOUT[name]
    }


def sparse_update(
    opt: SparseOptimizer,
    weight: torch.Tensor,
    states: dict[str, torch.Tensor],
    rows: torch.Tensor,
    grad: torch.Tensor,
    step: int,
) -> None:
    """Apply one optimizer step to the given rows, in place (formulas in the module docstring).

    Each update is computed as a change ``delta`` of the rows. An fp32 table without weight decay
    (and not lamb) gets it with one indexed add and is never gathered; otherwise the rows are
    gathered in fp32, changed and written back rounded to the storage dtype.

    Args:
        opt: the optimizer spec.
        weight: ``[num_rows, D]`` table storage (any float dtype); updated in place.
        states: the optimizer states of the same rows (see ``new_states``); updated in place.
        rows: 1-D int64 ids of the rows to update, each at most once, except a scratch row that belongs to
            no table (``StackedTables``): it may repeat, and what lands there is meaningless.
        grad: ``[len(rows), D]`` fp32 summed gradient of each row; overwritten (it holds the update).
        step: the step count ``t`` (>= 1) used by the bias corrections.
    """
    if rows.numel() == 0:
        return
    needs_rows = weight.dtype != torch.float32 or opt.weight_decay > 0 or opt.name == OptimizerName.lamb
    w = weight.index_select(0, rows).float() if needs_rows else None
    delta = _DELTAS[opt.name](opt, w, states, rows, grad, step)
    if w is None:
        _add_rows(weight, rows, delta)
    else:
        weight.index_copy_(0, rows, (w + delta).to(weight.dtype))


def _add_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """``target[rows] += values`` for unique rows (one exact add each; the scratch row may repeat).

    On CUDA a gather, an add and a scatter: ``index_put_(accumulate=True)`` sorts the rows and adds
    the repeats of one row one after the other, and the scratch row repeats once per lookup beyond
    the distinct rows (1.7M times a step at MLPerf's shape, where small tables take few rows: 265 ms
    on an H200), and ``index_add_``'s atomics contend there too. On CPU ``index_add_`` is fastest.
    """
    if target.is_cuda:
        target.index_copy_(0, rows, target.index_select(0, rows).add_(values))
    else:
        target.index_add_(0, rows, values)


def _sgd(opt: SparseOptimizer, w: torch.Tensor | None, states: dict[str, torch.Tensor], rows: torch.Tensor,
         g: torch.Tensor, step: int) -> torch.Tensor:
    return g.mul_(-opt.lr)


def _adagrad(opt: SparseOptimizer, w: torch.Tensor | None, states: dict[str, torch.Tensor], rows: torch.Tensor,
             g: torch.Tensor, step: int) -> torch.Tensor:
    m = g * g
    _add_rows(states["momentum1"], rows, m)
    torch.index_select(states["momentum1"], 0, rows, out=m)
    return g.mul_(-opt.lr).div_(m.sqrt_().add_(opt.eps))


def _mean_square(g: torch.Tensor) -> torch.Tensor:
    """Per-row mean of squares: a fused reduction on CUDA; on CPU einsum, which avoids a ``[rows, D]``
    temporary (fresh CPU allocations that size cost page faults; einsum is 4x faster there, 2x slower on CUDA)."""
    squares = torch.linalg.vecdot(g, g, dim=1) if g.is_cuda else torch.einsum("ij,ij->i", g, g)
    return squares.div_(g.shape[1])


def _rowwise_adagrad(opt: SparseOptimizer, w: torch.Tensor | None, states: dict[str, torch.Tensor],
                     rows: torch.Tensor, g: torch.Tensor, step: int) -> torch.Tensor:
    l2 = opt.weight_decay > 0 and opt.weight_decay_mode == WeightDecayMode.l2
    m = states["momentum1"].index_select(0, rows).add_(_mean_square(g + opt.weight_decay * w if l2 else g))
    states["momentum1"].index_copy_(0, rows, m)
    k = (opt.lr / m.sqrt_().add_(opt.eps)).unsqueeze(1)
    if opt.weight_decay == 0:
        return g.mul_(-k)
    if l2:  # w * (1 - k * wd) - k * g
        return g.mul_(-k).addcmul_(w, k, value=-opt.weight_decay)
    return g.mul_(-k).add_(w, alpha=-opt.lr * opt.weight_decay)  # w * (1 - lr * wd) - k * g


def _adam_direction(opt: SparseOptimizer, states: dict[str, torch.Tensor], rows: torch.Tensor, g: torch.Tensor,
                    step: int, rowwise_m2: bool) -> torch.Tensor:
    """Update and store the moments; return ``m1 / (1 - b1^t) / (sqrt(m2 / (1 - b2^t)) + eps)``."""
    b1, b2 = opt.betas
    m1 = states["momentum1"].index_select(0, rows).mul_(b1).add_(g, alpha=1.0 - b1)
    states["momentum1"].index_copy_(0, rows, m1)
    m2 = states["momentum2"].index_select(0, rows).mul_(b2)
    if rowwise_m2:
        m2.add_(_mean_square(g), alpha=1.0 - b2)
    else:
        m2.addcmul_(g, g, value=1.0 - b2)
    states["momentum2"].index_copy_(0, rows, m2)
    denominator = m2.div_(1.0 - b2**step).sqrt_().add_(opt.eps)
    return m1.div_(1.0 - b1**step).div_(denominator.unsqueeze(1) if rowwise_m2 else denominator)


def _adam(opt: SparseOptimizer, w: torch.Tensor | None, states: dict[str, torch.Tensor], rows: torch.Tensor,
          g: torch.Tensor, step: int) -> torch.Tensor:
    direction = _adam_direction(opt, states, rows, g, step, rowwise_m2=opt.name == OptimizerName.rowwise_adam)
    if w is not None:
        direction.add_(w, alpha=opt.weight_decay)
    return direction.mul_(-opt.lr)


def _lamb(opt: SparseOptimizer, w: torch.Tensor | None, states: dict[str, torch.Tensor], rows: torch.Tensor,
          g: torch.Tensor, step: int) -> torch.Tensor:
    assert w is not None  # sparse_update always gathers the rows for lamb: the trust ratio needs them
    r = _adam_direction(opt, states, rows, g, step, rowwise_m2=False).add_(w, alpha=opt.weight_decay)
    ratio = w.norm(dim=1, keepdim=True).div_(r.norm(dim=1, keepdim=True))
    return r.mul_(ratio.mul_(-opt.lr))


_DELTAS = {
    OptimizerName.sgd: _sgd,
    OptimizerName.adagrad: _adagrad,
    OptimizerName.rowwise_adagrad: _rowwise_adagrad,
    OptimizerName.adam: _adam,
    OptimizerName.rowwise_adam: _adam,
    OptimizerName.lamb: _lamb,
}

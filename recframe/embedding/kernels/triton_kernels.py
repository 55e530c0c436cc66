"""The ``@triton.jit`` kernels of the triton backend (the module that uses them: ``kernels/triton.py``).

Storage: a group's tables are stacked in one ``[total_rows, dim]`` tensor; a lookup's *key* is
its row there (``table row start + id``). Three phases per training step:

1. ``pooled_forward`` / ``sequence_forward``: one launch for all features of the group. Pooled:
   each program sums the rows of ``BLOCK_B`` bags (weights optional) in fp32 and writes them to
   ``out[sample, feature * dim:(feature + 1) * dim]`` in ``out``'s dtype (fp32, or autocast's bf16/fp16:
   rounded once to nearest even, as a cast of the fp32 output would be); sequence: each program copies ``BLOCK_B``
   rows. They also write every lookup's key and (pooled) the row of ``grad_out`` (seen as
   ``[batch * num_features, dim]``) that its gradient comes from, also without autograd: 8 bytes per
   lookup, and Triton 3.6 failed to compile the pooled kernel without those stores ("mask type
   matches ptr type", seen on an H100).
2. The caller sorts the keys (``torch.sort(stable=True)``), so the lookups of one row are
   consecutive, in input order.
3. ``segment_partials`` then ``update_rows``: the sorted lookups are cut into blocks of
   ``BLOCK`` positions. A row's lookups (a *segment*) belong to the program of the block where the
   segment starts: it sums the gradients of the segment's positions in its block, adds the partial
   sums that ``segment_partials`` wrote for the blocks the segment continues into (only long
   segments do: a row looked up thousands of times is summed by many programs in parallel), and
   applies the optimizer to the row. Every row is updated once, by one program, with its
   gradients summed in a fixed order: no atomics, and the same result on every run.

Optimizer arithmetic is fp32 (state is fp32, weights are read in their storage dtype, converted
to fp32 and rounded back to nearest even); the formulas are those of ``recframe.embedding.optimizers``.
These kernels use only ``tl`` operations present in Triton 3.6 through 3.9, and run under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported) on CPU tensors.

Example:
    >>> import torch  # doctest: +SKIP
    >>> out = torch.empty(2, 8)  # doctest: +SKIP
    >>> pooled_forward[(1,)](ids, offsets, ids, row_start, weight, out, keys, grad_rows, 2, 2, 1, 8,  # doctest: +SKIP
    ...                      HAS_WEIGHTS=False, BLOCK_B=32, BLOCK_D=8)
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from recframe.vocab import OptimizerName, WeightDecayMode

# Whether these kernels were built for Triton's CPU interpreter (decided when this module is imported).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Optimizer codes (the OPT constexpr of update_rows).
OPTIMIZER_CODES = {OptimizerName.sgd: 0, OptimizerName.adagrad: 1, OptimizerName.rowwise_adagrad: 2,
                   OptimizerName.adam: 3, OptimizerName.rowwise_adam: 4, OptimizerName.lamb: 5}
# The output (and output gradient) dtypes the kernels read and write: the GRAD_DTYPE constexpr.
TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
# Weight decay codes (the DECAY constexpr): none (None), l2 (added to the gradient), decoupled (shrinks the weight).
DECAY_CODES = {None: 0, WeightDecayMode.l2: 1, WeightDecayMode.decoupled: 2}


@triton.jit
def pooled_forward(indices_ptr, offsets_ptr, weights_ptr, row_start_ptr, weight_ptr, out_ptr, keys_ptr,
                   grad_rows_ptr, num_bags, batch, num_features, dim,
                   HAS_WEIGHTS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Weighted sums of ``BLOCK_B`` bags (bag ``feature * batch + sample``) per program."""
    bags = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    bag_ok = bags < num_bags
    start = tl.load(offsets_ptr + bags, mask=bag_ok, other=0)
    length = tl.load(offsets_ptr + bags + 1, mask=bag_ok, other=0) - start
    feature = bags // batch
    out_row = ((bags - feature * batch) * num_features + feature).to(tl.int64)
    row_start = tl.load(row_start_ptr + feature, mask=bag_ok, other=0)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    acc = tl.zeros([BLOCK_B, BLOCK_D], dtype=tl.float32)
    for j in range(0, tl.max(length, axis=0)):
        take = j < length
        position = start + j
        rows = (tl.load(indices_ptr + position, mask=take, other=0) + row_start).to(tl.int64)
        values = tl.load(weight_ptr + rows[:, None] * dim + cols[None, :], mask=take[:, None] & col_ok[None, :],
                         other=0.0).to(tl.float32)
        if HAS_WEIGHTS:
            values = values * tl.load(weights_ptr + position, mask=take, other=0.0).to(tl.float32)[:, None]
        acc += values
        tl.store(keys_ptr + position, rows, mask=take)
        tl.store(grad_rows_ptr + position, out_row, mask=take)
    tl.store(out_ptr + out_row[:, None] * dim + cols[None, :], _round(acc, out_ptr.dtype.element_ty),
             mask=bag_ok[:, None] & col_ok[None, :])


@triton.jit
def sequence_forward(indices_ptr, offsets_ptr, row_start_ptr, weight_ptr, out_ptr, keys_ptr, num_ids, batch,
                     num_features, dim, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """``out[i] = weight[row_start[feature of i] + indices[i]]`` in fp32, ``BLOCK_B`` ids per program."""
    position = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = position < num_ids
    feature = tl.zeros([BLOCK_B], dtype=tl.int32)
    for f in range(1, num_features):  # the feature of an id: how many feature starts lie at or before it
        feature += (position >= tl.load(offsets_ptr + f * batch)).to(tl.int32)
    rows = (tl.load(indices_ptr + position, mask=ok, other=0)
            + tl.load(row_start_ptr + feature, mask=ok, other=0)).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = ok[:, None] & (cols < dim)[None, :]
    values = tl.load(weight_ptr + rows[:, None] * dim + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + position.to(tl.int64)[:, None] * dim + cols[None, :], values, mask=mask)
    tl.store(keys_ptr + position, rows, mask=ok)


@triton.jit
def _source(ptr, INDIRECT: tl.constexpr, DTYPE: tl.constexpr):
    """``ptr``, or with ``INDIRECT`` the ``DTYPE`` pointer whose address ``ptr`` (an int64 tensor) holds (CUDA graphs).

    The address is 16-byte aligned (the caller checks), as Triton assumes of tensor arguments: told so, the
    compiler picks the same vector widths and layouts as for a direct pointer, so sums come out bit for bit
    the same on both paths."""
    if INDIRECT:
        return tl.multiple_of(tl.load(ptr).to(tl.pointer_type(DTYPE)), 16)
    else:
        return ptr


@triton.jit
def _lookup_grads(order_ptr, grad_rows_ptr, weights_ptr, grad_ptr, position, take, cols, col_ok, dim,
                  POOLED: tl.constexpr, HAS_WEIGHTS: tl.constexpr):
    """The fp32 gradients ``[len(position), BLOCK_D]`` of the sorted lookups at ``position`` (zero where not
    ``take``); ``grad_ptr`` may point to 16-bit values (autocast's output): converted after the load."""
    source = tl.load(order_ptr + position, mask=take, other=0)
    if POOLED:
        grad_row = tl.load(grad_rows_ptr + source, mask=take, other=0).to(tl.int64)
    else:
        grad_row = source.to(tl.int64)
    grads = tl.load(grad_ptr + grad_row[:, None] * dim + cols[None, :], mask=take[:, None] & col_ok[None, :],
                    other=0.0).to(tl.float32)
    if HAS_WEIGHTS:
        grads = grads * tl.load(weights_ptr + source, mask=take, other=0.0).to(tl.float32)[:, None]
    return grads


@triton.jit
def _round(value, dtype: tl.constexpr):
    """fp32 ``value`` rounded to nearest even in ``dtype`` (explicitly for bf16: the interpreter truncates)."""
    if dtype == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        rounded = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        return tl.where(value == value, rounded, value.to(tl.bfloat16))  # NaN stays NaN
    else:
        return value.to(dtype)


@triton.jit
def segment_partials(keys_ptr, order_ptr, grad_rows_ptr, weights_ptr, grad_ptr, partial_ptr, num_lookups, dim,
                     POOLED: tl.constexpr, HAS_WEIGHTS: tl.constexpr, INDIRECT: tl.constexpr, BLOCK: tl.constexpr,
                     BLOCK_D: tl.constexpr, GRAD_DTYPE: tl.constexpr):
    """For a block that begins inside a segment started in an earlier block: the sum of that segment's
    gradients over this block's positions, into ``partial[block]`` (left unwritten for other blocks).

    With ``INDIRECT``, ``grad_ptr`` and ``weights_ptr`` are int64 tensors holding the addresses (``_source``);
    ``GRAD_DTYPE``: the output gradient's dtype (fp32, or autocast's bf16/fp16: loaded so, summed in fp32)."""
    grad_ptr = _source(grad_ptr, INDIRECT, GRAD_DTYPE)
    if HAS_WEIGHTS:
        weights_ptr = _source(weights_ptr, INDIRECT, tl.float32)
    block = tl.program_id(0)
    first = block * BLOCK
    key = tl.load(keys_ptr + first)
    continues = (block > 0) & (tl.load(keys_ptr + first - 1, mask=block > 0, other=-1) == key)
    if continues:  # most blocks start a segment and have nothing to do
        position = first + tl.arange(0, BLOCK)
        ok = position < num_lookups
        take = ok & (tl.load(keys_ptr + position, mask=ok, other=-1) == key)
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < dim
        grads = _lookup_grads(order_ptr, grad_rows_ptr, weights_ptr, grad_ptr, position, take, cols, col_ok, dim,
                              POOLED, HAS_WEIGHTS)
        tl.store(partial_ptr + block.to(tl.int64) * dim + cols, tl.sum(grads, axis=0), mask=col_ok)


@triton.jit
def update_rows(keys_ptr, order_ptr, grad_rows_ptr, weights_ptr, grad_ptr, partial_ptr, weight_ptr, state1_ptr,
                state2_ptr, num_lookups, num_blocks, dim, lr, eps, weight_decay, beta1, beta2, bias1, bias2,
                OPT: tl.constexpr, DECAY: tl.constexpr, POOLED: tl.constexpr, HAS_WEIGHTS: tl.constexpr,
                INDIRECT: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, PARTIALS: tl.constexpr,
                GRAD_DTYPE: tl.constexpr):
    """Sum the gradients of every segment that starts in this block and apply the optimizer to its row.

    ``bias1, bias2`` are ``1 - beta1^t, 1 - beta2^t`` (adam, rowwise_adam, lamb); ``state1/state2``
    are momentum1/momentum2 (per element, or per row for rowwise_adagrad's momentum1 and
    rowwise_adam's momentum2). ``INDIRECT``, ``GRAD_DTYPE``: as in ``segment_partials``.
    """
    grad_ptr = _source(grad_ptr, INDIRECT, GRAD_DTYPE)
    if HAS_WEIGHTS:
        weights_ptr = _source(weights_ptr, INDIRECT, tl.float32)
    block = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    position = block * BLOCK + offs
    ok = position < num_lookups
    key = tl.load(keys_ptr + position, mask=ok, other=-1)
    previous = tl.load(keys_ptr + position - 1, mask=ok & (position > 0), other=-1)
    is_start = ok & ((position == 0) | (key != previous))
    block_end = tl.minimum(block * BLOCK + BLOCK, num_lookups)
    # Each segment's length inside this block: up to the next segment start, or the block end.
    start_at = tl.where(is_start, position, block_end)
    next_start = tl.min(tl.where(offs[None, :] > offs[:, None], start_at[None, :], block_end), axis=1)
    length = tl.where(is_start, next_start - position, 0)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    grad = tl.zeros([BLOCK, BLOCK_D], dtype=tl.float32)
    for j in range(0, tl.max(length, axis=0)):
        grad += _lookup_grads(order_ptr, grad_rows_ptr, weights_ptr, grad_ptr, position + j, j < length, cols,
                              col_ok, dim, POOLED, HAS_WEIGHTS)
    # The block's last segment may run on into the next blocks: add their partial sums, in block order.
    last_key = tl.load(keys_ptr + block_end - 1)
    more = tl.load(keys_ptr + block_end, mask=block_end < num_lookups, other=-1) == last_key
    # Only the block where that segment starts sums it (a block inside a hot row's run skips the walk).
    more = more & (tl.sum((is_start & (key == last_key)).to(tl.int32), axis=0) > 0)
    extra = tl.zeros([BLOCK_D], dtype=tl.float32)
    later = block + 1
    while more:
        blocks = later + tl.arange(0, PARTIALS)
        hit = (blocks < num_blocks) & (tl.load(keys_ptr + blocks * BLOCK, mask=blocks < num_blocks, other=-1)
                                       == last_key)
        extra += tl.sum(tl.load(partial_ptr + blocks.to(tl.int64)[:, None] * dim + cols[None, :],
                                mask=hit[:, None] & col_ok[None, :], other=0.0), axis=0)
        more = tl.sum(hit.to(tl.int32), axis=0) == PARTIALS
        later += PARTIALS
    g = tl.where((is_start & (key == last_key))[:, None], grad + extra[None, :], grad)

    # ---- the optimizer, on the rows of the segments that start here ----
    rows = key.to(tl.int64)
    mask = is_start[:, None] & col_ok[None, :]
    weight_at = weight_ptr + rows[:, None] * dim + cols[None, :]
    w = tl.load(weight_at, mask=mask, other=0.0).to(tl.float32)
    element_at = rows[:, None] * dim + cols[None, :]
    if OPT == 0:  # sgd
        new = w - lr * g
    elif OPT == 1:  # adagrad
        m = tl.load(state1_ptr + element_at, mask=mask, other=0.0) + g * g
        tl.store(state1_ptr + element_at, m, mask=mask)
        new = w - lr * g / (tl.sqrt(m) + eps)
    elif OPT == 2:  # rowwise_adagrad
        if DECAY == 1:
            decayed = g + weight_decay * w
        else:
            decayed = g
        m = tl.load(state1_ptr + rows, mask=is_start, other=0.0) + tl.sum(decayed * decayed, axis=1) / dim
        tl.store(state1_ptr + rows, m, mask=is_start)
        k = lr / (tl.sqrt(m) + eps)
        if DECAY == 1:
            new = (1.0 - k * weight_decay)[:, None] * w - k[:, None] * g
        elif DECAY == 2:
            new = (1.0 - lr * weight_decay) * w - k[:, None] * g
        else:
            new = w - k[:, None] * g
    else:  # adam, rowwise_adam, lamb
        m1 = beta1 * tl.load(state1_ptr + element_at, mask=mask, other=0.0) + (1.0 - beta1) * g
        tl.store(state1_ptr + element_at, m1, mask=mask)
        if OPT == 4:
            m2 = beta2 * tl.load(state2_ptr + rows, mask=is_start, other=0.0) + (1.0 - beta2) * (
                tl.sum(g * g, axis=1) / dim)
            tl.store(state2_ptr + rows, m2, mask=is_start)
            direction = m1 / bias1 / (tl.sqrt(m2 / bias2) + eps)[:, None]
        else:
            m2 = beta2 * tl.load(state2_ptr + element_at, mask=mask, other=0.0) + (1.0 - beta2) * (g * g)
            tl.store(state2_ptr + element_at, m2, mask=mask)
            direction = m1 / bias1 / (tl.sqrt(m2 / bias2) + eps)
        step = direction + weight_decay * w
        if OPT == 5:  # lamb: scaled by the trust ratio ||w|| / ||step|| (norms before the update)
            step_norm = tl.where(is_start, tl.sqrt(tl.sum(step * step, axis=1)), 1.0)  # no 0/0 in unused rows
            ratio = tl.sqrt(tl.sum(w * w, axis=1)) / step_norm
            step = step * ratio[:, None]
        new = w - lr * step
    tl.store(weight_at, _round(new, weight_ptr.dtype.element_ty), mask=mask)

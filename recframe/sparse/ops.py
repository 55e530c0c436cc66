"""Low-level jagged ops with two interchangeable paths: fbgemm_gpu kernels and plain torch.

The fbgemm path is used where ``fbgemm_gpu`` imports; the torch path runs everywhere. Both give
identical results (the property tests run every op on both). ``use_backend`` forces one path,
for tests and benchmarks.

Example:
    >>> import torch
    >>> from recframe.sparse import ops
    >>> with ops.use_backend("torch"):
    ...     ops.complete_cumsum(torch.tensor([2, 0, 3]))
    tensor([0, 2, 2, 5])
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from recframe.vocab import Backend

log = logging.getLogger(__name__)

BACKENDS = (Backend.fbgemm, Backend.torch)  # the sparse-op paths (no triton ones)
_forced_backend: Backend | None = None


@functools.cache
def fbgemm_available() -> bool:
    """Whether ``fbgemm_gpu`` imports here (checked once; a failure is logged once, never raised)."""
    try:
        import fbgemm_gpu  # noqa: F401
    except Exception as err:  # a missing or ABI-mismatched build must not crash recframe
        log.info("fbgemm_gpu is not usable (%s): sparse ops use plain torch", err)
        return False
    return True


def active_backend() -> Backend:
    """The op path in use: the forced one, else ``fbgemm`` where it imports, else ``torch``."""
    if _forced_backend is not None:
        return _forced_backend
    return Backend.fbgemm if fbgemm_available() else Backend.torch


@contextmanager
def use_backend(name: Backend) -> Iterator[None]:
    """Force the sparse-op path inside a ``with`` block.

    Args:
        name: ``"fbgemm"`` or ``"torch"``.

    Example:
        >>> with use_backend("torch"):
        ...     pass
    """
    global _forced_backend
    if name not in BACKENDS:
        raise ValueError(f"unknown sparse-op backend {name!r}; choose one of {BACKENDS}")
    if name == Backend.fbgemm and not fbgemm_available():
        raise RuntimeError("sparse-op backend 'fbgemm' requested but fbgemm_gpu does not import here")
    previous, _forced_backend = _forced_backend, Backend(name)
    try:
        yield
    finally:
        _forced_backend = previous


def complete_cumsum(lengths: torch.Tensor) -> torch.Tensor:
    """Offsets of a 1-D lengths tensor: ``[0, l0, l0 + l1, ...]`` (one more entry than lengths).

    Args:
        lengths: 1-D integer tensor.
    """
    if active_backend() == Backend.fbgemm and lengths.numel() > 0:
        return torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    out = torch.zeros(lengths.numel() + 1, dtype=lengths.dtype, device=lengths.device)
    torch.cumsum(lengths, dim=0, out=out[1:])
    return out


def repeat_segments(values: torch.Tensor, lengths: torch.Tensor, total: int,
                    by_search: bool | None = None) -> torch.Tensor:
    """``values[i]`` repeated ``lengths[i]`` times: ``values.repeat_interleave(lengths, output_size=total)``.

    On CUDA, ``repeat_interleave`` gives one warp to each segment, so a few long segments (one per
    feature: 26 segments of up to 819k ids at MLPerf's shape) write serially: 0.3 ms where this takes
    a few microseconds. There each element finds its segment by a binary search of the segments' ends
    (``torch.bucketize``); on the CPU ``repeat_interleave``'s plain loop is the faster one.

    Args:
        values: 1-D, one value per segment.
        lengths: 1-D non-negative integer lengths, as many as ``values``, summing to ``total``.
        total: the output's length (a host int: no sync).
        by_search: force the search path (True) or ``repeat_interleave`` (False); None: search on CUDA.

    Example:
        >>> repeat_segments(torch.tensor([7, 8, 9]), torch.tensor([2, 0, 3]), 5, by_search=True)
        tensor([7, 7, 9, 9, 9])
    """
    if by_search is None:
        by_search = values.device.type == "cuda"
    if not by_search:
        return values.repeat_interleave(lengths, output_size=total)
    ends = torch.cumsum(lengths.long(), dim=0)
    segment = torch.bucketize(torch.arange(total, device=values.device), ends, right=True)
    return values[segment]


_KEY_ORDERS: dict[tuple[tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = {}


def key_order_tensor(order: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``order`` as a tensor on ``device``, made once per (order, dtype, device).

    A tensor made from a Python list on a GPU is a blocking copy from pageable memory; a step that
    permutes keys the same way every batch pays it once.

    Args:
        order: key indices.
        dtype: int32 or int64.
        device: where the tensor is used.
    """
    key = (tuple(order), dtype, torch.device(device))
    tensor = _KEY_ORDERS.get(key)
    if tensor is None:
        if len(_KEY_ORDERS) >= 1024:  # many distinct orders: a cache no longer helps, keep memory bounded
            _KEY_ORDERS.clear()
        tensor = _KEY_ORDERS[key] = torch.tensor(order, dtype=dtype, device=device)
    return tensor


def permute_key_blocks(
    order: list[int],
    lengths: torch.Tensor,
    values: torch.Tensor,
    weights: torch.Tensor | None,
    stride: int,
    offset_per_key: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Reorder the key blocks of key-major jagged data (keys may repeat or be dropped).

    Args:
        order: source key index for each output key.
        lengths: ``[num_keys * stride]`` lengths, key-major.
        values: ids of all keys, key-major.
        weights: per-id weights or None.
        stride: batch size.
        offset_per_key: start of each key's ids in ``values`` (num_keys + 1 entries).

    Returns:
        The permuted ``(lengths, values, weights)``.
    """
    num_keys = len(offset_per_key) - 1
    out_total = sum(offset_per_key[i + 1] - offset_per_key[i] for i in order)
    if active_backend() == Backend.fbgemm and num_keys > 0 and len(order) > 0 and stride > 0:
        index = key_order_tensor(order, torch.int32, lengths.device)
        out_lengths, out_values, out_weights = torch.ops.fbgemm.permute_2D_sparse_data(
            index, lengths.view(num_keys, stride), values, weights, out_total
        )
        return out_lengths.reshape(-1), out_values, out_weights
    out_lengths = lengths.view(num_keys, stride).index_select(0, key_order_tensor(order, torch.int64,
                                                                                   lengths.device)).reshape(-1)
    slices = [slice(offset_per_key[i], offset_per_key[i + 1]) for i in order]
    out_values = torch.cat([values[s] for s in slices]) if slices else values[:0]
    out_weights = None
    if weights is not None:
        out_weights = torch.cat([weights[s] for s in slices]) if slices else weights[:0]
    return out_lengths, out_values, out_weights

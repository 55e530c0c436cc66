"""Counter-based randomness of the synthetic data: a 64-bit hash of ids, uniforms per id, Zipf-distributed ids.

Everything is a pure function of its inputs (ids, salts, uniforms), so any batch can be made
again anywhere, in any order, and tables of any size cost no memory. ``recframe.data.synthetic_device``
computes the same bits with torch on the training device.

Example:
    >>> import numpy as np
    >>> zipf_ids(np.array([0.0, 0.5, 0.999]), num_rows=1000, exponent=1.05).tolist()
    [0, 22, 991]
    >>> hash_uniforms(np.array([3]), np.uint64(7)).shape
    (1, 4)
"""

from __future__ import annotations

import math

import numpy as np

U64 = np.uint64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijective, well-mixed hash of uint64 values (vectorized).

    Args:
        x: uint64 values, any shape.
    """
    x = x + U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> U64(27))) * U64(0x94D049BB133111EB)
    return x ^ (x >> U64(31))


def hash_uniforms(ids: np.ndarray, salt: np.ndarray | np.uint64) -> np.ndarray:
    """Four independent uniforms in [-sqrt(3), sqrt(3)) (variance 1) per id: shape ``[*ids.shape, 4]``.

    Args:
        ids: integer ids, any shape.
        salt: uint64 salt(s) broadcast against ``ids`` (one per task and feature: independent weights).
    """
    h = mix64(ids.astype(U64) ^ salt)
    parts = h.view(np.uint16).reshape(*ids.shape, 4).astype(np.float32)
    return parts * np.float32(2.0 * math.sqrt(3.0) / 65536.0) - np.float32(math.sqrt(3.0))


def zipf_ids(u: np.ndarray, num_rows: np.ndarray | int, exponent: float) -> np.ndarray:
    """Map uniforms ``u`` in [0, 1) to ids in ``[0, num_rows)`` with ``P(id = k) ~ (k + 1) ** -exponent``.

    Inverse CDF of the continuous power law on ``[1, num_rows + 1)``, floored: O(1) memory for any
    table size. ``exponent = 0`` is uniform. Computed in float32 (8x faster) when every table has
    fewer than 2**24 rows, else in float64 so that every id stays reachable.

    Args:
        u: uniforms, any shape.
        num_rows: table size(s), broadcast against ``u``.
        exponent: the Zipf exponent ``s >= 0``.
    """
    rows = np.asarray(num_rows, dtype=np.int64)
    return zipf_ids_in(u, rows, exponent, np.float32 if int(rows.max(initial=1)) < 2**24 else np.float64)


def zipf_ids_in(u: np.ndarray, rows: np.ndarray, exponent: float, dtype: type) -> np.ndarray:
    """``zipf_ids`` computed in ``dtype``: a subset of the tables gets the numbers of all of them.

    Args:
        u: uniforms, any shape.
        rows: table sizes (int64), broadcast against ``u``.
        exponent: the Zipf exponent ``s >= 0``.
        dtype: ``np.float32`` or ``np.float64``, chosen from the largest table of the whole set.
    """
    u = u.astype(dtype, copy=False)
    m = (rows + 1).astype(dtype)
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(m))
    else:
        a = dtype(1.0 - exponent)
        x = (dtype(1.0) + u * (m**a - dtype(1.0))) ** (dtype(1.0) / a)
    return np.minimum(x.astype(np.int64) - 1, rows - 1).clip(min=0)

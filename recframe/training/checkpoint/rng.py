"""A process's random number generator states as tensors, saved per rank in each checkpoint.

Example:
    >>> import torch
    >>> state = rng_tensors()
    >>> first = torch.rand(1)
    >>> restore_rng(state)
    >>> bool(torch.rand(1) == first)
    True
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's torch (CPU and current CUDA device), numpy and Python RNG states, as tensors."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, _ = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": torch.from_numpy(np.concatenate([keys.astype(np.int64), [pos, has_gauss]])),
           "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
           "python": torch.tensor([version, *internal], dtype=torch.int64)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    """Set the RNG states saved by :func:`rng_tensors`.

    Args:
        state: what :func:`rng_tensors` returned (possibly through a checkpoint).
    """
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"].numpy()
    np.random.set_state(("MT19937", numpy[:-2].astype(np.uint32), int(numpy[-2]), int(numpy[-1]),
                         float(state["numpy_gauss"])))
    python = state["python"].tolist()
    random.setstate((python[0], tuple(python[1:]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])

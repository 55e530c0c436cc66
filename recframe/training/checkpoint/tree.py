"""The JSON part of a checkpoint: Lightning's dict as JSON, its tensors replaced by references.

Dicts with non-string keys and tuples are tagged (``__dict__``, ``__tuple__``) so they come back
as they were; any object that is neither JSON nor a tensor is refused (no pickled objects).

Example:
    >>> import torch
    >>> tensors = {}
    >>> encode({"step": 4, "w": torch.zeros(2), "pair": (1, 2)}, "", tensors)
    {'step': 4, 'w': {'__tensor__': 'w'}, 'pair': {'__tuple__': [1, 2]}}
    >>> decode(encode({"pair": (1, 2)}, "", tensors), tensors)
    {'pair': (1, 2)}
"""

from __future__ import annotations

from typing import Any

import torch


def encode(tree: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``tree`` as JSON, its tensors moved to ``tensors`` (key: the ``/``-joined path) and referenced.

    Args:
        tree: a nest of dicts, lists, tuples, numbers, strings, None and tensors.
        path: the ``/``-joined path of ``tree`` in the whole (``""`` at the top).
        tensors: receives every tensor of ``tree`` under its path.

    Raises:
        TypeError: naming the path of an object that is neither JSON nor a tensor.
        ValueError: two tensors have the same path.
    """
    if isinstance(tree, torch.Tensor):
        if path in tensors:
            raise ValueError(f"two checkpoint tensors have the key {path!r}")
        tensors[path] = tree
        return {"__tensor__": path}
    if isinstance(tree, bool | int | float | str) or tree is None:
        return tree
    if isinstance(tree, tuple):
        return {"__tuple__": [encode(v, f"{path}/{i}", tensors) for i, v in enumerate(tree)]}
    if isinstance(tree, list):
        return [encode(v, f"{path}/{i}", tensors) for i, v in enumerate(tree)]
    if isinstance(tree, dict):
        bad = [k for k in tree if not isinstance(k, str | int | float | bool) and k is not None]
        if bad:
            raise TypeError(f"checkpoint entry {path or '/'}: key {bad[0]!r} is not a string or a number")
        pairs = [[k, encode(v, f"{path}/{k}" if path else str(k), tensors)] for k, v in tree.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k in tree):
            return {k: v for k, v in pairs}
        return {"__dict__": pairs}
    raise TypeError(f"checkpoint entry {path or '/'} is a {type(tree).__module__}.{type(tree).__qualname__}: "
                    "only tensors, numbers, strings, lists and dicts can be saved (no pickled objects)")


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`.

    Args:
        tree: what :func:`encode` returned (after a JSON round trip).
        tensors: the tensors by path, as :func:`encode` filled them.
    """
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__tuple__"}:
            return tuple(decode(v, tensors) for v in tree["__tuple__"])
        if set(tree) == {"__dict__"}:
            return {k: decode(v, tensors) for k, v in tree["__dict__"]}
        return {k: decode(v, tensors) for k, v in tree.items()}
    return tree

"""KeyedTensor: pooled embeddings of many features side by side, ``[batch, sum of dims]``.

Example:
    >>> import torch
    >>> kt = KeyedTensor(keys=["a", "b"], length_per_key=[2, 3], values=torch.arange(10.0).view(2, 5))
    >>> kt["b"]
    tensor([[2., 3., 4.],
            [7., 8., 9.]])
    >>> [t.shape for t in KeyedTensor.regroup([kt], [["b"], ["a", "b"]])]
    [torch.Size([2, 3]), torch.Size([2, 5])]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class KeyedTensor:
    """Dense per-feature blocks concatenated along ``key_dim``.

    Args:
        keys: feature names, in block order.
        length_per_key: width of each key's block (its embedding dim).
        values: ``[batch, sum(length_per_key)]`` tensor (for ``key_dim=1``).
        key_dim: the dimension along which the blocks are laid out.
    """

    def __init__(self, keys: Sequence[str], length_per_key: Sequence[int], values: torch.Tensor,
                 key_dim: int = 1) -> None:
        keys, length_per_key = list(keys), list(length_per_key)
        if len(keys) != len(length_per_key):
            raise ValueError(f"KeyedTensor: {len(keys)} keys but {len(length_per_key)} lengths")
        if values.shape[key_dim] != sum(length_per_key):
            raise ValueError(f"KeyedTensor: values have {values.shape[key_dim]} columns on dim {key_dim}, "
                             f"but the keys' lengths sum to {sum(length_per_key)}")
        self._keys = keys
        self._length_per_key = length_per_key
        self._values = values
        self._key_dim = key_dim
        offsets = [0]
        for n in length_per_key:
            offsets.append(offsets[-1] + n)
        self._offset_per_key = offsets
        self._index = {k: i for i, k in enumerate(keys)}

    def with_values(self, values: torch.Tensor) -> KeyedTensor:
        """The same keys and widths around other values, without rebuilding the key tables (a hot path).

        The result shares this one's key lists (treat ``keys()`` and ``length_per_key()`` as read-only).

        Args:
            values: a tensor with the same width along ``key_dim``.

        Example:
            >>> layout = KeyedTensor(["a", "b"], [1, 2], torch.zeros(0, 3))
            >>> layout.with_values(torch.ones(4, 3))["b"].shape
            torch.Size([4, 2])
        """
        if values.shape[self._key_dim] != self._offset_per_key[-1]:
            raise ValueError(f"KeyedTensor: values have {values.shape[self._key_dim]} columns on dim "
                             f"{self._key_dim}, but the keys' lengths sum to {self._offset_per_key[-1]}")
        out = KeyedTensor.__new__(KeyedTensor)
        out.__dict__.update(self.__dict__)
        out._values = values
        return out

    @staticmethod
    def from_tensor_list(keys: Sequence[str], tensors: Sequence[torch.Tensor], key_dim: int = 1) -> KeyedTensor:
        """Concatenate one tensor per key along ``key_dim``."""
        return KeyedTensor(keys, [t.shape[key_dim] for t in tensors], torch.cat(list(tensors), dim=key_dim), key_dim)

    def keys(self) -> list[str]:
        return self._keys

    def values(self) -> torch.Tensor:
        return self._values

    def key_dim(self) -> int:
        return self._key_dim

    def length_per_key(self) -> list[int]:
        return self._length_per_key

    def offset_per_key(self) -> list[int]:
        return self._offset_per_key

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._index:
            raise KeyError(f"key {key!r} not in KeyedTensor keys {self._keys}")
        i = self._index[key]
        return self._values.narrow(self._key_dim, self._offset_per_key[i], self._length_per_key[i])

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {key: self[key] for key in self._keys}

    def to(self, device: torch.device | str, non_blocking: bool = False) -> KeyedTensor:
        return KeyedTensor(self._keys, self._length_per_key, self._values.to(device, non_blocking=non_blocking),
                           self._key_dim)

    @staticmethod
    def regroup(keyed_tensors: Sequence[KeyedTensor], groups: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Gather keys from several KeyedTensors into new groups (differentiable).

        Args:
            keyed_tensors: the sources; a key is looked up in the first source that has it.
            groups: for each output, the keys whose blocks are concatenated along dim 1, in order.

        Returns:
            One ``[batch, sum of the group's dims]`` tensor per group.
        """
        where: dict[str, KeyedTensor] = {}
        for kt in keyed_tensors:
            for key in kt.keys():
                where.setdefault(key, kt)
        out = []
        for group in groups:
            missing = [k for k in group if k not in where]
            if missing:
                raise KeyError(f"KeyedTensor.regroup: keys {missing} are in none of the inputs")
            out.append(torch.cat([where[k][k] for k in group], dim=1))
        return out

    def __repr__(self) -> str:
        shape = tuple(self._values.shape)
        return f"KeyedTensor(keys={self._keys}, length_per_key={self._length_per_key}, shape={shape})"

"""KeyedJaggedTensor (KJT): the sparse features of a batch, many keys, one flat values tensor.

Layout (the vocabulary TorchRec users know): ``values`` holds the ids of key 0 for samples
0..B-1, then key 1, ...; ``lengths[k * B + b]`` is the number of ids of key ``k`` in sample ``b``
(key-major); ``B`` is the stride (batch size). ``weights`` (optional) has one float per id.

Example:
    >>> import torch
    >>> kjt = KeyedJaggedTensor.from_lengths(
    ...     keys=["user", "item"],
    ...     values=torch.tensor([7, 8, 9, 1]),
    ...     lengths=torch.tensor([2, 0, 1, 1]),  # user: [7, 8], []   item: [9], [1]
    ... )
    >>> kjt.stride(), kjt.length_per_key()
    (2, [2, 2])
    >>> kjt["item"].to_dense()
    [tensor([9]), tensor([1])]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recframe.sparse import ops
from recframe.sparse.jagged import JaggedTensor


def _check(keys: list[str], values: torch.Tensor, weights: torch.Tensor | None,
           lengths: torch.Tensor | None, offsets: torch.Tensor | None, stride: int | None,
           length_per_key: list[int] | None = None) -> None:
    """Raise ValueError naming the first structural problem of a would-be KJT."""
    where = f"KeyedJaggedTensor(keys={keys})"
    if not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{where}: keys must be strings, got {[type(k).__name__ for k in keys]}")
    if values.dim() != 1:
        raise ValueError(f"{where}: values must be 1-D, got shape {tuple(values.shape)}")
    if values.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{where}: ids (values) must be int32 or int64, got {values.dtype}; "
                         "cast them, e.g. values.long()")
    if weights is not None:
        if not weights.is_floating_point():
            raise ValueError(f"{where}: weights must be floating point, got {weights.dtype}")
        if weights.shape != values.shape:
            raise ValueError(f"{where}: weights have {weights.numel()} entries but there are "
                             f"{values.numel()} ids; give one weight per id")
    if lengths is not None:
        if lengths.dim() != 1 or lengths.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{where}: lengths must be a 1-D int32/int64 tensor, "
                             f"got {lengths.dtype} of shape {tuple(lengths.shape)}")
        expected = len(keys) * stride if stride is not None else None
        if len(keys) == 0 and lengths.numel() != 0:
            raise ValueError(f"{where}: no keys but {lengths.numel()} lengths")
        if expected is not None and lengths.numel() != expected:
            raise ValueError(f"{where}: {lengths.numel()} lengths for {len(keys)} keys x batch {stride}; "
                             f"expected {expected} (lengths are key-major: all samples of key 0, then key 1, ...)")
        if len(keys) and lengths.numel() % len(keys):
            raise ValueError(f"{where}: {lengths.numel()} lengths cannot be split evenly over "
                             f"{len(keys)} keys (expected keys x batch size lengths)")
        if lengths.numel() and int(lengths.min()) < 0:
            bad = int(torch.nonzero(lengths < 0)[0])
            raise ValueError(f"{where}: negative length {int(lengths[bad])} at position {bad}")
        total = int(lengths.sum())
        if total != values.numel():
            raise ValueError(f"{where}: lengths sum to {total} but there are {values.numel()} ids")
    if offsets is not None:
        if offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64) or offsets.numel() == 0:
            raise ValueError(f"{where}: offsets must be a non-empty 1-D int32/int64 tensor")
        if int(offsets[0]) != 0 or int(offsets[-1]) != values.numel():
            raise ValueError(f"{where}: offsets must start at 0 and end at the number of ids "
                             f"({values.numel()}), got {int(offsets[0])}..{int(offsets[-1])}")
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            raise ValueError(f"{where}: offsets must not decrease (that would be a negative length)")
        if len(keys) and (offsets.numel() - 1) % len(keys):
            raise ValueError(f"{where}: {offsets.numel() - 1} bags cannot be split evenly over {len(keys)} keys")
        if stride is not None and offsets.numel() - 1 != len(keys) * stride:
            raise ValueError(f"{where}: {offsets.numel() - 1} bags for {len(keys)} keys x batch {stride}")
    if length_per_key is not None:  # a wrong hint would make permute write out of bounds (fbgemm)
        bags = lengths if lengths is not None else offsets[1:] - offsets[:-1]  # type: ignore[index]
        actual = bags.view(len(keys), bags.numel() // len(keys)).sum(dim=1).tolist() if keys else []
        if list(length_per_key) != actual:
            raise ValueError(f"{where}: length_per_key {list(length_per_key)} does not match the lengths, "
                             f"which give {actual} ids per key")


class KeyedJaggedTensor:
    """Sparse features of a batch: for each key, one bag of ids per sample.

    Prefer the constructors ``from_lengths`` / ``from_offsets``.

    Args:
        keys: feature names, in the order of their blocks in ``values``.
        values: 1-D int32/int64 ids, key-major.
        weights: optional 1-D float weights, one per id.
        lengths: ``[len(keys) * stride]`` bag sizes, key-major. Give lengths or offsets.
        offsets: ``[len(keys) * stride + 1]`` bag boundaries.
        stride: batch size; inferred from lengths/offsets when there is at least one key.
        validate: check the structure and raise a ValueError naming the problem; turn off on hot paths.
        length_per_key: ids per key when already known; checked when validating. Splitting or permuting
            keys needs it: without it the first ``length_per_key()`` call reads the lengths on the host (a
            device sync). Data with fixed bag sizes knows it from shapes (``bag size * stride`` per key).
    """

    def __init__(
        self,
        keys: Sequence[str],
        values: torch.Tensor,
        weights: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
        stride: int | None = None,
        validate: bool = True,
        length_per_key: list[int] | None = None,
    ) -> None:
        keys = list(keys)
        if lengths is None and offsets is None:
            raise ValueError(f"KeyedJaggedTensor(keys={keys}) needs lengths or offsets")
        if validate:
            _check(keys, values, weights, lengths, offsets, stride, length_per_key)
        if stride is None:
            bags = lengths.numel() if lengths is not None else offsets.numel() - 1  # type: ignore[union-attr]
            stride = bags // len(keys) if keys else 0
        self._keys = keys
        self._values = values
        self._weights = weights
        self._lengths = lengths
        self._offsets = offsets
        self._stride = stride
        self._length_per_key = length_per_key
        self._offset_per_key: list[int] | None = None

    # ---- construction -------------------------------------------------------------------------
    @staticmethod
    def from_lengths(keys: Sequence[str], values: torch.Tensor, lengths: torch.Tensor,
                     weights: torch.Tensor | None = None, stride: int | None = None,
                     validate: bool = True, length_per_key: list[int] | None = None) -> KeyedJaggedTensor:
        """Build from key-major bag sizes (see the class docstring for Args)."""
        return KeyedJaggedTensor(keys, values, weights=weights, lengths=lengths, stride=stride, validate=validate,
                                 length_per_key=length_per_key)

    @staticmethod
    def from_offsets(keys: Sequence[str], values: torch.Tensor, offsets: torch.Tensor,
                     weights: torch.Tensor | None = None, stride: int | None = None,
                     validate: bool = True, length_per_key: list[int] | None = None) -> KeyedJaggedTensor:
        """Build from key-major bag boundaries (see the class docstring for Args)."""
        return KeyedJaggedTensor(keys, values, weights=weights, offsets=offsets, stride=stride, validate=validate,
                                 length_per_key=length_per_key)

    @staticmethod
    def from_jt_dict(jts: dict[str, JaggedTensor]) -> KeyedJaggedTensor:
        """Build from ``{key: JaggedTensor}``; every JaggedTensor must have the same batch size."""
        keys = list(jts)
        if not keys:
            return KeyedJaggedTensor.empty()
        strides = {k: jt.lengths().numel() for k, jt in jts.items()}
        if len(set(strides.values())) != 1:
            raise ValueError(f"KeyedJaggedTensor.from_jt_dict: batch sizes differ between keys: {strides}")
        has_weights = [jt.weights_or_none() is not None for jt in jts.values()]
        if any(has_weights) and not all(has_weights):
            raise ValueError("KeyedJaggedTensor.from_jt_dict: either every key has weights or none has")
        weights = torch.cat([jt.weights() for jt in jts.values()]) if all(has_weights) else None
        return KeyedJaggedTensor(
            keys,
            torch.cat([jt.values() for jt in jts.values()]),
            weights=weights,
            lengths=torch.cat([jt.lengths() for jt in jts.values()]),
            stride=strides[keys[0]],
        )

    @staticmethod
    def empty(keys: Sequence[str] = (), stride: int = 0, device: torch.device | str = "cpu",
              with_weights: bool = False) -> KeyedJaggedTensor:
        """A KJT with no ids at all: every bag of every key is empty."""
        keys = list(keys)
        return KeyedJaggedTensor(
            keys,
            torch.empty(0, dtype=torch.int64, device=device),
            weights=torch.empty(0, device=device) if with_weights else None,
            lengths=torch.zeros(len(keys) * stride, dtype=torch.int64, device=device),
            stride=stride,
            validate=False,
        )

    # ---- accessors ----------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return self._keys

    def values(self) -> torch.Tensor:
        return self._values

    def weights(self) -> torch.Tensor:
        if self._weights is None:
            raise ValueError("this KeyedJaggedTensor has no weights; use weights_or_none()")
        return self._weights

    def weights_or_none(self) -> torch.Tensor | None:
        return self._weights

    def lengths(self) -> torch.Tensor:
        if self._lengths is None:
            assert self._offsets is not None
            self._lengths = self._offsets[1:] - self._offsets[:-1]
        return self._lengths

    def offsets(self) -> torch.Tensor:
        if self._offsets is None:
            self._offsets = ops.complete_cumsum(self.lengths())
        return self._offsets

    def stride(self) -> int:
        """The batch size."""
        return self._stride

    def device(self) -> torch.device:
        return self._values.device

    def length_per_key(self) -> list[int]:
        """Number of ids of each key over the whole batch (one host sync, then cached)."""
        if self._length_per_key is None:
            if not self._keys:
                self._length_per_key = []
            else:
                per_key = self.lengths().view(len(self._keys), self._stride).sum(dim=1)
                self._length_per_key = per_key.tolist()
        return self._length_per_key

    def offset_per_key(self) -> list[int]:
        """Start of each key's ids in ``values()``, plus the total: ``len(keys) + 1`` entries."""
        if self._offset_per_key is None:
            offsets = [0]
            for n in self.length_per_key():
                offsets.append(offsets[-1] + n)
            self._offset_per_key = offsets
        return self._offset_per_key

    def key_index(self, key: str) -> int:
        try:
            return self._keys.index(key)
        except ValueError:
            raise KeyError(f"key {key!r} not in KeyedJaggedTensor keys {self._keys}") from None

    def __getitem__(self, key: str) -> JaggedTensor:
        return self._jagged_at(self.key_index(key))

    def _jagged_at(self, index: int) -> JaggedTensor:
        start, end = self.offset_per_key()[index], self.offset_per_key()[index + 1]
        weights = None if self._weights is None else self._weights[start:end]
        return JaggedTensor(
            values=self._values[start:end],
            lengths=self.lengths()[index * self._stride:(index + 1) * self._stride],
            weights=weights,
        )

    def to_dict(self) -> dict[str, JaggedTensor]:
        return {key: self[key] for key in self._keys}

    # ---- reshaping ------------------------------------------------------------------------------
    def split(self, sizes: Sequence[int]) -> list[KeyedJaggedTensor]:
        """Cut into consecutive groups of keys (views, no copy).

        Args:
            sizes: number of keys in each part; they sum to ``len(keys())``; 0 gives a KJT with no keys.
        """
        if sum(sizes) != len(self._keys) or any(s < 0 for s in sizes):
            raise ValueError(f"split sizes {list(sizes)} must be >= 0 and sum to the {len(self._keys)} keys")
        lengths, opk, parts, start = self.lengths(), self.offset_per_key(), [], 0
        for size in sizes:
            end = start + size
            lo, hi = opk[start], opk[end]
            parts.append(KeyedJaggedTensor(
                self._keys[start:end],
                self._values[lo:hi],
                weights=None if self._weights is None else self._weights[lo:hi],
                lengths=lengths[start * self._stride:end * self._stride],
                stride=self._stride,
                validate=False,
                length_per_key=self.length_per_key()[start:end],
            ))
            start = end
        return parts

    def permute(self, indices: Sequence[int]) -> KeyedJaggedTensor:
        """Reorder keys: output key ``i`` is input key ``indices[i]`` (repeats and drops allowed).

        Args:
            indices: positions into ``keys()``.
        """
        indices = list(indices)
        if any(not 0 <= i < len(self._keys) for i in indices):
            raise ValueError(f"permute indices {indices} out of range for {len(self._keys)} keys")
        lengths, values, weights = ops.permute_key_blocks(
            indices, self.lengths(), self._values, self._weights, self._stride, self.offset_per_key()
        )
        lpk = self.length_per_key()
        return KeyedJaggedTensor(
            [self._keys[i] for i in indices], values, weights=weights, lengths=lengths,
            stride=self._stride, validate=False, length_per_key=[lpk[i] for i in indices],
        )

    @staticmethod
    def concat(kjts: Sequence[KeyedJaggedTensor]) -> KeyedJaggedTensor:
        """Append the keys of several KJTs of the same batch size."""
        if not kjts:
            raise ValueError("KeyedJaggedTensor.concat needs at least one KeyedJaggedTensor")
        strides = [k.stride() for k in kjts]
        if len(set(strides)) != 1:
            raise ValueError(f"KeyedJaggedTensor.concat: batch sizes (strides) differ: {strides}")
        has_weights = [k.weights_or_none() is not None for k in kjts]
        if any(has_weights) and not all(has_weights):
            raise ValueError("KeyedJaggedTensor.concat: either every KJT has weights or none has "
                             f"(weights present: {has_weights})")
        return KeyedJaggedTensor(
            [key for k in kjts for key in k.keys()],
            torch.cat([k.values() for k in kjts]),
            weights=torch.cat([k.weights() for k in kjts]) if all(has_weights) else None,
            lengths=torch.cat([k.lengths() for k in kjts]),
            stride=strides[0],
            validate=False,
            length_per_key=[n for k in kjts for n in k.length_per_key()],
        )

    # ---- devices and memory -------------------------------------------------------------------
    def _with_tensors(self, fn) -> KeyedJaggedTensor:  # noqa: ANN001 (a tensor -> tensor function)
        out = KeyedJaggedTensor(
            self._keys, fn(self._values),
            weights=None if self._weights is None else fn(self._weights),
            lengths=None if self._lengths is None else fn(self._lengths),
            offsets=None if self._offsets is None else fn(self._offsets),
            stride=self._stride, validate=False, length_per_key=self._length_per_key,
        )
        out._offset_per_key = self._offset_per_key
        return out

    def layout(self) -> tuple:
        """What a CUDA graph bakes in: keys, stride, per-key lengths (when known) and each tensor's shape and dtype.

        Two KJTs with the same layout differ only in their tensors' contents (``copy_`` moves one into the other).
        """
        tensors = (self._values, self._weights, self._lengths, self._offsets)
        return (tuple(self._keys), self._stride, None if self._length_per_key is None else tuple(self._length_per_key),
                tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors))

    def clone(self) -> KeyedJaggedTensor:
        """A copy with its own tensors (same device and layout)."""
        return self._with_tensors(torch.clone)

    def copy_(self, other: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Copy ``other``'s tensors into this KJT's, in place (same ``layout()``: the caller checks); returns self.

        Tensors ``other`` lacks are left as they are: offsets this KJT derived from its lengths since (a CUDA
        graph's step recomputes them from the copied lengths).

        Example:
            >>> a = KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 2]), torch.tensor([2]))
            >>> a.copy_(KeyedJaggedTensor.from_lengths(["f"], torch.tensor([3, 4]), torch.tensor([2]))).values()
            tensor([3, 4])
        """
        for mine, theirs in ((self._values, other._values), (self._weights, other._weights),
                             (self._lengths, other._lengths), (self._offsets, other._offsets)):
            if theirs is not None:
                mine.copy_(theirs, non_blocking=True)
        return self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> KeyedJaggedTensor:
        """A copy on ``device``; with ``non_blocking`` the copy from pinned memory is asynchronous."""
        return self._with_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> KeyedJaggedTensor:
        """A copy in page-locked host memory (for asynchronous copies to the GPU)."""
        return self._with_tensors(lambda t: t.pin_memory())

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Mark every tensor as used by ``stream`` (the caching allocator then waits for it)."""
        for t in (self._values, self._weights, self._lengths, self._offsets):
            if t is not None:
                t.record_stream(stream)

    def __repr__(self) -> str:
        if self._stride * len(self._keys) > 64:
            return f"KeyedJaggedTensor(keys={self._keys}, stride={self._stride}, ids={self._values.numel()})"
        body = ", ".join(f"{k!r}: {self._jagged_at(i).to_dense()}" for i, k in enumerate(self._keys))
        return f"KeyedJaggedTensor({{{body}}}, weights={'yes' if self._weights is not None else 'no'})"

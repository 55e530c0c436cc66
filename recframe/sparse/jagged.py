"""JaggedTensor: a batch of variable-length bags of ids (one feature), with optional weights.

Example:
    >>> import torch
    >>> jt = JaggedTensor(values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 0, 1]))
    >>> jt.to_dense()
    [tensor([1, 2]), tensor([], dtype=torch.int64), tensor([3])]
    >>> jt.to_padded_dense(desired_length=2, padding_value=-1)
    tensor([[ 1,  2],
            [-1, -1],
            [ 3, -1]])
"""

from __future__ import annotations

import torch

from recframe.sparse import ops


def _padded(
    values: torch.Tensor,
    lengths: torch.Tensor,
    offsets: torch.Tensor,
    desired_length: int | None,
    padding_value: float,
) -> torch.Tensor:
    """Rows of jagged ``values`` as a ``[batch, length]`` tensor, cut or padded to ``length``."""
    batch = lengths.numel()
    length = desired_length if desired_length is not None else int(lengths.max()) if batch else 0
    out = torch.full((batch, length), padding_value, dtype=values.dtype, device=values.device)
    if values.numel() == 0 or length == 0:
        return out
    rows = torch.repeat_interleave(torch.arange(batch, device=values.device), lengths.long())
    positions = torch.arange(values.numel(), device=values.device) - offsets[:-1].long()[rows]
    keep = positions < length
    out[rows[keep], positions[keep]] = values[keep]
    return out


class JaggedTensor:
    """Values of one feature for a batch, cut into bags by ``lengths`` (or ``offsets``).

    Args:
        values: 1-D tensor of ids (or any values) of all bags, bag after bag.
        lengths: 1-D integer tensor, the size of each bag. Give lengths or offsets.
        offsets: 1-D integer tensor of ``len(lengths) + 1`` bag boundaries, starting at 0.
        weights: optional 1-D float tensor, one weight per value.
    """

    def __init__(
        self,
        values: torch.Tensor,
        lengths: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        if lengths is None and offsets is None:
            raise ValueError("JaggedTensor needs lengths or offsets")
        self._values = values
        self._lengths = lengths
        self._offsets = offsets
        self._weights = weights

    @staticmethod
    def from_dense(values: list[torch.Tensor], weights: list[torch.Tensor] | None = None) -> JaggedTensor:
        """Build from one tensor per bag.

        Args:
            values: list of 1-D tensors, one per bag (may be empty).
            weights: optional list of 1-D float tensors matching ``values``.
        """
        if weights is not None and [w.numel() for w in weights] != [v.numel() for v in values]:
            raise ValueError("JaggedTensor.from_dense: weights must have the same bag sizes as values")
        lengths = torch.tensor([v.numel() for v in values], dtype=torch.int64)
        flat = torch.cat(values) if values else torch.empty(0, dtype=torch.int64)
        flat_weights = None
        if weights is not None:
            flat_weights = torch.cat(weights) if weights else torch.empty(0, dtype=torch.float32)
        return JaggedTensor(values=flat, lengths=lengths, weights=flat_weights)

    def values(self) -> torch.Tensor:
        return self._values

    def lengths(self) -> torch.Tensor:
        if self._lengths is None:
            assert self._offsets is not None
            self._lengths = self._offsets[1:] - self._offsets[:-1]
        return self._lengths

    def offsets(self) -> torch.Tensor:
        if self._offsets is None:
            self._offsets = ops.complete_cumsum(self.lengths())
        return self._offsets

    def weights(self) -> torch.Tensor:
        if self._weights is None:
            raise ValueError("this JaggedTensor has no weights; use weights_or_none()")
        return self._weights

    def weights_or_none(self) -> torch.Tensor | None:
        return self._weights

    def to_dense(self) -> list[torch.Tensor]:
        """One tensor per bag."""
        return list(torch.split(self._values, self.lengths().tolist()))

    def to_dense_weights(self) -> list[torch.Tensor] | None:
        """One weight tensor per bag, or None without weights."""
        if self._weights is None:
            return None
        return list(torch.split(self._weights, self.lengths().tolist()))

    def to_padded_dense(self, desired_length: int | None = None, padding_value: float = 0.0) -> torch.Tensor:
        """Bags as rows of a ``[batch, length]`` tensor.

        Args:
            desired_length: row length; longer bags are cut, shorter ones padded. Default: the longest bag.
            padding_value: value of the padding.
        """
        return _padded(self._values, self.lengths(), self.offsets(), desired_length, padding_value)

    def to_padded_dense_weights(
        self, desired_length: int | None = None, padding_value: float = 0.0
    ) -> torch.Tensor | None:
        """Weights laid out like ``to_padded_dense``, or None without weights."""
        if self._weights is None:
            return None
        return _padded(self._weights, self.lengths(), self.offsets(), desired_length, padding_value)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> JaggedTensor:
        """A copy on ``device`` (tensors already there are not copied)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return JaggedTensor(
            values=self._values.to(device, non_blocking=non_blocking),
            lengths=move(self._lengths),
            offsets=move(self._offsets),
            weights=move(self._weights),
        )

    def __repr__(self) -> str:
        weights = "" if self._weights is None else f", weights={self._weights.tolist()}"
        return f"JaggedTensor(values={self._values.tolist()}, lengths={self.lengths().tolist()}{weights})"

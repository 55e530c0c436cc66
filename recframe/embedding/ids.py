"""Turn one group's slice of a KeyedJaggedTensor into kernel inputs: id policy, id check, mean weights.

Per table, ``id_policy`` says what happens to an id outside ``[0, num_embeddings)``:
``error`` raises a ValueError naming the feature, the table, the id and the sample (on CUDA a
device-side assert, without a host sync: see ``GroupInput._check_range``; unless the
collection was built with ``check_ids=False``, which trusts the ids: the torch backend then
does no check at all and fbgemm only its own, cheaper one without names); ``modulo`` replaces
every id by ``id mod num_embeddings`` (Python's sign convention, so negative ids land in range).
Mean pooling becomes a weighted sum with weights ``w / n`` (``w`` the per-id weight or 1, ``n``
the bag size), in every backend: fbgemm-gpu-cpu 1.8's MEAN backward ignores the ``1 / n`` factor
when per-id weights are given, and one formula for all backends keeps them equal.

Example:
    >>> import torch
    >>> from recframe.sparse import KeyedJaggedTensor
    >>> prep = GroupInput(["f"], ["t"], [10], ["modulo"], pooling="mean", check_ids=True)
    >>> kjt = KeyedJaggedTensor.from_lengths(["f"], torch.tensor([12, -1, 3]), torch.tensor([2, 1]))
    >>> ids, offsets, weights = prep(kjt)
    >>> ids.tolist(), weights.tolist()
    ([2, 9, 3], [0.5, 0.5, 1.0])
"""

from __future__ import annotations

import torch
from torch import nn

from recframe.sparse import KeyedJaggedTensor
from recframe.sparse.ops import repeat_segments
from recframe.vocab import IdPolicy, Pooling


class GroupInput(nn.Module):
    """Ids, offsets and per-id weights of one kernel group, checked or hashed into range.

    Args:
        features: the group's features, in kernel input order.
        tables: the table name of each feature.
        rows: ``num_embeddings`` of each feature's table.
        id_policies: ``error`` or ``modulo`` for each feature (its table's policy).
        pooling: ``sum``, ``mean`` or ``none`` (sequence: weights are not used).
        check_ids: whether ``error`` features are checked (no host sync: see ``_check_range``).
    """

    def __init__(self, features: list[str], tables: list[str], rows: list[int], id_policies: list[IdPolicy],
                 pooling: Pooling, check_ids: bool) -> None:
        super().__init__()
        self.features = features
        self.tables = tables
        self.rows = rows
        self.pooling = pooling
        modulo = [p == IdPolicy.modulo for p in id_policies]
        self.all_modulo = all(modulo)
        self.any_modulo = any(modulo)
        self.check = check_ids and not self.all_modulo
        self.register_buffer("feature_rows", torch.tensor(rows, dtype=torch.int64), persistent=False)
        self.register_buffer("feature_modulo", torch.tensor(modulo, dtype=torch.bool), persistent=False)

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Kernel inputs for the group's part of the batch (its keys are ``features``, batch >= 1).

        Args:
            kjt: the group's features.

        Returns:
            ``(int64 ids, int64 offsets [num_features * batch + 1], float per-id weights or None)``.
        """
        ids = kjt.values().long()
        offsets = kjt.offsets().long()
        batch = kjt.stride()
        if self.any_modulo or self.check:
            per_feature = offsets[::batch].diff()
            limit = repeat_segments(self.feature_rows, per_feature, ids.numel())
            if self.all_modulo:
                ids = torch.remainder(ids, limit)
            elif self.any_modulo:
                hashed = repeat_segments(self.feature_modulo, per_feature, ids.numel())
                ids = torch.where(hashed, torch.remainder(ids, limit), ids)
            if self.check:
                self._check_range(ids, limit, offsets, batch)
        if self.pooling == Pooling.none:
            return ids, offsets, None
        weights = kjt.weights_or_none()
        if self.pooling == Pooling.mean:
            lengths = offsets.diff()
            counts = lengths.repeat_interleave(lengths, output_size=ids.numel())
            weights = (1.0 if weights is None else weights.float()) / counts.float()
        return ids, offsets, weights

    def _check_range(self, ids: torch.Tensor, limit: torch.Tensor, offsets: torch.Tensor, batch: int) -> None:
        """Stop the step when an id is outside its table, without a host sync on an accelerator.

        ``torch._assert_async`` raises at once on CPU (then the ValueError names the feature, id and
        sample); on CUDA it is a device-side assert queued before the lookup: the step stops with
        "device-side assert triggered" before any kernel reads out of range (no crash deep inside a
        kernel, no silent wrong data), and the host never waits. For the detailed message on a GPU run,
        check the ids where the data is loaded, or rerun the batch on CPU.
        """
        bad = (ids < 0) | (ids >= limit)
        message = f"recframe: an id is outside its table's range (features {self.features})"
        try:
            torch._assert_async(~bad.any(), message[:250])  # CUDA takes messages of under 255 characters
        except RuntimeError as err:  # raised here only where the assert runs on the host (CPU)
            raise self._id_error(ids, bad, offsets, batch) from err

    def _id_error(self, ids: torch.Tensor, bad: torch.Tensor, offsets: torch.Tensor, batch: int) -> ValueError:
        position = int(torch.nonzero(bad)[0])
        bag = int(torch.searchsorted(offsets, position, right=True)) - 1
        feature = bag // batch
        count = int(bad.sum())
        return ValueError(
            f"feature {self.features[feature]!r}: id {int(ids[position])} (sample {bag % batch}) is outside "
            f"[0, {self.rows[feature]}) of table {self.tables[feature]!r}"
            f"{f' ({count} ids out of range in this batch)' if count > 1 else ''}; fix the ids, or set the "
            "table's id_policy='modulo' to hash them into range"
        )

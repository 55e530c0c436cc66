"""Two-tower retrieval for serving: the user tower as a program, every item's vector once, exact top-k search.

``recframe export format=retrieval out=DIR`` writes (``recframe.training.export``):

- ``DIR/user_tower.pt2``: a ``torch.export`` program ``(dense, values, lengths) -> [batch, dim]``
  unit-norm user vectors (the inputs as ``recframe.serving.program`` documents them, over the user
  features only, in the order of its metadata's ``sparse_features``);
- ``DIR/items.pt``: ``{"item_ids": [N] int64 (the data's item ids), "vectors": [N, dim] float32,
  "item_rows": [N] int64 (each item's row of the item_id table)}``, the item tower run once over
  the catalog (``torch.load(..., weights_only=True)``).

A query is then the user program and ``top_k`` (exact: a matrix product and ``topk``, in chunks
of users), with torch alone; FAISS or any vector index can take ``vectors`` instead.

Example:
    >>> import torch
    >>> scores, rows = top_k(torch.eye(3)[:2], torch.eye(3), k=2)
    >>> rows.tolist()
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from recframe.serving.embeddings import InferenceEmbeddingBags
from recframe.sparse import KeyedJaggedTensor
from recframe.vocab import Quantize


class UserTower(nn.Module):
    """``(dense, values, lengths) -> unit-norm user vectors`` of a trained two-tower model (a copy; eval mode).

    Args:
        model: a trained ``recframe.models.TwoTower`` (``user_embeddings``, ``encode_users``).
        quantize: how the user tables are stored.
    """

    def __init__(self, model: nn.Module, quantize: Quantize | str = Quantize.none) -> None:
        super().__init__()
        if not hasattr(model, "encode_users") or not hasattr(model, "user_embeddings"):
            raise ValueError(f"{type(model).__name__} is not a two-tower model (no encode_users): "
                             "format=retrieval exports retrieval models; use format=exported")
        self.model = copy.deepcopy(model).eval()
        self.sparse_keys = list(self.model.user_embeddings.feature_names)
        self.quantize = Quantize(quantize)
        lookup = InferenceEmbeddingBags.from_collection(self.model.user_embeddings, self.quantize, self.sparse_keys)
        self.model.user_embeddings = lookup
        self.table_bytes = lookup.num_bytes

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        kjt = KeyedJaggedTensor(self.sparse_keys, values, lengths=lengths.reshape(-1), stride=dense.shape[0],
                                validate=False)
        return self.model.encode_users(kjt, dense)


@torch.no_grad()
def item_vectors(model: nn.Module, catalog: KeyedJaggedTensor, batch_size: int = 4096) -> torch.Tensor:
    """``[N, dim]`` item vectors of a catalog KJT (one sample per item), in batches of ``batch_size`` items."""
    out = []
    items = catalog.stride()
    keys = catalog.keys()
    lengths = catalog.lengths().view(len(keys), items)
    ends = torch.cumsum(lengths, dim=1)
    starts = ends - lengths
    base = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths.sum(1), 0)[:-1]])
    for lo in range(0, items, batch_size):
        hi = min(lo + batch_size, items)
        parts = [catalog.values()[base[k] + starts[k, lo]: base[k] + (ends[k, hi - 1] if hi > lo else 0)]
                 for k in range(len(keys))]
        chunk = KeyedJaggedTensor.from_lengths(keys, torch.cat(parts), lengths[:, lo:hi].reshape(-1))
        out.append(model.encode_items(chunk))
    return torch.cat(out) if out else torch.zeros(0, model.output_dim)


@torch.no_grad()
def top_k(users: torch.Tensor, items: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items of each user by dot product: ``(scores [U, k], item rows [U, k])``, best first.

    Args:
        users: ``[U, dim]`` query vectors.
        items: ``[N, dim]`` item vectors.
        k: results per user (at most ``N``).
        chunk: users scored per matrix product (bounds the ``[chunk, N]`` score block).
    """
    if not 1 <= k <= items.shape[0]:
        raise ValueError(f"top_k: k must be in [1, {items.shape[0]}] (the catalog's items), got {k}")
    scores, rows = [], []
    for lo in range(0, users.shape[0], chunk):
        best = (users[lo: lo + chunk] @ items.T).topk(k, dim=1)
        scores.append(best.values)
        rows.append(best.indices)
    if not scores:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.int64)
    return torch.cat(scores), torch.cat(rows)


def select_keys(kjt: KeyedJaggedTensor, keys: Sequence[str]) -> KeyedJaggedTensor:
    """``kjt`` with exactly ``keys``, in that order."""
    present = kjt.keys()
    return kjt if present == list(keys) else kjt.permute([present.index(k) for k in keys])

"""TwoTower retrieval: a user tower and an item tower over their own features, in-batch softmax.

Each tower pools its features' embeddings, runs an MLP and L2-normalizes the result. Training
scores every user of a batch against every item of the batch (the positives on the diagonal, the
other items as negatives) and minimizes the softmax cross-entropy of the diagonal. Retrieval
encodes the catalog once with ``encode_items`` and ranks it for ``encode_users``; ``recall_at_k``
evaluates that ranking.

In-batch negatives are sampled in proportion to item popularity, so popular items are penalised;
a duplicate of the positive item elsewhere in the batch also counts as a negative. Both are the
standard trade-offs of in-batch softmax (a logQ correction, not done here, removes the first).

Two embedding collections, both swappable by a sharder: ``user_embeddings`` and ``item_embeddings``.

Example:
    >>> import torch
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> from recframe.sparse import Batch, KeyedJaggedTensor
    >>> opt = SparseOptimizer(name="rowwise_adagrad", lr=0.05)
    >>> users = EmbeddingBagCollection([TableConfig(name="u", num_embeddings=10, embedding_dim=8,
    ...                                             feature_names=["user_id"])], opt, backend="torch")
    >>> items = EmbeddingBagCollection([TableConfig(name="i", num_embeddings=20, embedding_dim=8,
    ...                                             feature_names=["item_id"])], opt, backend="torch")
    >>> model = TwoTower(users, items, user_layer_sizes=[16, 4], item_layer_sizes=[16, 4])
    >>> kjt = KeyedJaggedTensor.from_lengths(["user_id", "item_id"], torch.tensor([1, 2, 3, 11, 12, 13]),
    ...                                      torch.ones(6, dtype=torch.int64))  # 3 (user, item) pairs
    >>> logits = model(Batch(torch.zeros(3, 0), kjt, labels=torch.ones(3)))
    >>> logits.shape
    torch.Size([3, 3])
    >>> model.loss(logits).total.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recframe.models import flops
from recframe.models._pooled import concat_pooled, pooled_feature_dims
from recframe.models.heads import TaskLosses
from recframe.models.towers import MLP, Activation
from recframe.models.zoo import CheckContext, ConfigProblem, ModelContext, register_model, suggestion
from recframe.sparse import Batch, KeyedJaggedTensor


class TwoTower(nn.Module):
    """Two towers scored by a scaled cosine similarity, trained with in-batch softmax.

    Args:
        user_embeddings: ``EmbeddingBagCollection`` of the user (query) features.
        item_embeddings: ``EmbeddingBagCollection`` of the item (candidate) features.
        user_layer_sizes: the user tower's MLP sizes; the last is the shared output dim.
        item_layer_sizes: the item tower's MLP sizes; must end at the same dim.
        num_dense_features: dense user-side inputs in ``batch.dense_features`` fed to the user tower (0 allowed).
        temperature: divides the cosine similarities before the softmax.
        activation: nonlinearity between layers (none after the last).

    Example:
        >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
        >>> def collection(feature):
        ...     table = TableConfig(name=feature, num_embeddings=20, embedding_dim=8, feature_names=[feature])
        ...     return EmbeddingBagCollection([table], SparseOptimizer(), backend="torch")
        >>> model = TwoTower(collection("user_id"), collection("item_id"), [16, 4], [16, 4], temperature=0.1)
        >>> catalog = KeyedJaggedTensor.from_lengths(["item_id"], torch.arange(20), torch.ones(20, dtype=torch.int64))
        >>> model.encode_items(catalog).shape  # retrieval: encode the catalog once
        torch.Size([20, 4])
    """

    def __init__(
        self,
        user_embeddings: nn.Module,
        item_embeddings: nn.Module,
        user_layer_sizes: Sequence[int],
        item_layer_sizes: Sequence[int],
        num_dense_features: int = 0,
        temperature: float = 0.1,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        if not user_layer_sizes or not item_layer_sizes or user_layer_sizes[-1] != item_layer_sizes[-1]:
            raise ValueError(f"TwoTower: both towers must end at the same dim, got user {list(user_layer_sizes)} "
                             f"and item {list(item_layer_sizes)}")
        if not temperature > 0:
            raise ValueError(f"TwoTower: temperature must be > 0, got {temperature}")
        user_features = pooled_feature_dims(user_embeddings)
        item_features = pooled_feature_dims(item_embeddings)
        self.user_feature_names = [name for name, _ in user_features]
        self.item_feature_names = [name for name, _ in item_features]
        overlap = set(self.user_feature_names) & set(self.item_feature_names)
        if overlap:
            raise ValueError(f"TwoTower: features {sorted(overlap)} are in both towers; give each tower its own")
        self.num_dense_features = num_dense_features
        self.temperature = temperature
        self.user_embeddings = user_embeddings
        self.item_embeddings = item_embeddings
        user_in = num_dense_features + sum(dim for _, dim in user_features)
        item_in = sum(dim for _, dim in item_features)
        self.user_tower = MLP(user_in, user_layer_sizes, activation=activation, activate_last=False)
        self.item_tower = MLP(item_in, item_layer_sizes, activation=activation, activate_last=False)

    @property
    def output_dim(self) -> int:
        return self.user_tower.out_features

    def encode_users(self, features: KeyedJaggedTensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm user vectors ``[batch, output_dim]``.

        Args:
            features: a KJT holding (at least) the user features; other keys are ignored.
            dense: ``[batch, num_dense_features]`` user-side dense inputs (required when that is > 0).
        """
        pooled = concat_pooled(self.user_embeddings(features), self.user_feature_names)
        if self.num_dense_features:
            if dense is None or dense.shape[1:] != (self.num_dense_features,):
                raise ValueError(f"TwoTower: the user tower needs dense inputs of shape [batch, "
                                 f"{self.num_dense_features}], got {None if dense is None else tuple(dense.shape)}")
            pooled = torch.cat([dense, pooled], dim=1)
        return F.normalize(self.user_tower(pooled), dim=1)

    def encode_items(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """Unit-norm item vectors ``[num_items, output_dim]`` from a KJT holding (at least) the item features."""
        pooled = concat_pooled(self.item_embeddings(features), self.item_feature_names)
        return F.normalize(self.item_tower(pooled), dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """In-batch logits ``[B, B]``: user ``i`` against item ``j``; positives on the diagonal."""
        users = self.encode_users(batch.sparse_features, batch.dense_features)
        items = self.encode_items(batch.sparse_features)
        return users @ items.T / self.temperature

    def loss(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> TaskLosses:
        """In-batch softmax cross-entropy: row ``i``'s target is column ``i``.

        Args:
            logits: ``[B, B]`` from ``forward``.
            labels: ignored (every pair of a retrieval batch is a positive); accepted so that
                every model's ``loss(logits, batch.labels)`` has one signature.
        """
        if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
            raise ValueError(f"TwoTower.loss expects square in-batch logits, got shape {tuple(logits.shape)}")
        targets = torch.arange(logits.shape[0], device=logits.device)
        total = F.cross_entropy(logits, targets)
        return TaskLosses(total=total, per_task={"in_batch_softmax": total})

    def dense_parameter_count(self) -> int:
        """Parameters outside the embedding tables."""
        return flops.dense_parameter_count(self, [self.user_embeddings, self.item_embeddings])

    def dense_flops_per_sample(self, batch_size: int = 1) -> int:
        """Forward FLOPs per (user, item) sample: both towers plus one row of in-batch scores.

        Args:
            batch_size: the in-batch scores cost ``batch_size`` dot products per sample (``2 * dim``
                FLOPs each) plus ``batch_size`` divisions by the temperature; 1 gives serving cost.
        """
        dim = self.output_dim
        return (flops.mlp_flops(self.user_tower) + flops.mlp_flops(self.item_tower)
                + batch_size * (2 * dim + 1))

    def dense_activations_per_sample(self, batch_size: int = 1) -> int:
        """Activation elements per (user, item) sample the forward writes (convention: ``recframe.models.flops``):
        both towers' concatenated inputs and layers, the two normalized vectors and one row of in-batch scores.

        Args:
            batch_size: the in-batch scores are ``batch_size`` values per sample (and as many scaled by the
                temperature); 1 gives serving cost.
        """
        return (self.user_tower.in_features + self.item_tower.in_features
                + flops.mlp_activations(self.user_tower) + flops.mlp_activations(self.item_tower)
                + 2 * self.output_dim + 2 * batch_size)


@torch.no_grad()
def recall_at_k(users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of users whose target item ranks in the top ``k`` of the catalog by dot product.

    Args:
        users: ``[U, dim]`` user vectors.
        items: ``[N, dim]`` vectors of the whole catalog (row ``n`` is item ``n``).
        targets: ``[U]`` index of each user's held-out positive item.
        k: cutoff (a random ranking scores ``k / N`` on average).

    Example:
        >>> items = torch.eye(4)
        >>> recall_at_k(torch.eye(4)[[0, 1]], items, torch.tensor([0, 2]), k=1)
        0.5
    """
    if not 1 <= k <= items.shape[0]:
        raise ValueError(f"recall_at_k: k must be in [1, {items.shape[0]}], got {k}")
    scores = users @ items.T
    top = scores.topk(k, dim=1).indices
    return float((top == targets.unsqueeze(1)).any(dim=1).float().mean())


@dataclass
class TwoTowerConfig:
    """Two towers (user, item) trained with an in-batch softmax, for retrieval."""

    name: str = "two_tower"  # model: two_tower
    user_features: list[str] = field(default_factory=list)  # sparse features of the user tower
    item_features: list[str] = field(default_factory=list)  # sparse features of the item tower
    tower_mlp: list[int] = field(default_factory=lambda: [128, 64])  # each tower's MLP; last = output dim
    temperature: float = 0.05  # softmax temperature of the in-batch loss
    recall_ks: list[int] = field(default_factory=lambda: [1, 10, 50])  # k of the recall@k validation metrics


def _tower_problems(node: Any, context: CheckContext) -> list[ConfigProblem]:
    """Each tower lists known sparse features; no feature is in both."""
    out: list[ConfigProblem] = []
    for side in ("user_features", "item_features"):
        if not node[side]:
            out.append((f"model.{side}", "is empty; list the sparse features of this tower", ""))
        out += [(f"model.{side}", f"unknown feature {f!r}", suggestion(f, context.sparse_features))
                for f in node[side] if f not in context.sparse_features]
    both = set(node.user_features) & set(node.item_features)
    if both:
        out.append(("model", f"features {sorted(both)} are in both towers", ""))
    return out


@register_model("two_tower", schema=TwoTowerConfig, check=_tower_problems, retrieval=True)
def build_two_tower(node: Any, context: ModelContext) -> TwoTower:
    """Two towers from their config node (``TwoTowerConfig``)."""
    return TwoTower(user_embeddings=context.embeddings(list(node.user_features)),
                    item_embeddings=context.embeddings(list(node.item_features)),
                    user_layer_sizes=list(node.tower_mlp), item_layer_sizes=list(node.tower_mlp),
                    num_dense_features=context.num_dense_features, temperature=node.temperature)

"""Wide & Deep (Cheng et al., 2016): a linear model and an MLP trained jointly, logits summed.

    logit_t = wide_t(dense, per-id weights) + head_t(MLP([dense, pooled embeddings]))

The wide part is a linear function of the dense features plus one learned weight per id of every
sparse feature (cross-product features are sparse features too: hash them into a feature of their
own upstream). Two embedding collections, both swappable by a sharder: ``embeddings`` (the deep
part's embeddings; dims may differ) and ``wide_embeddings`` (per-id weights, dim ``num_tasks``;
build them with ``recframe.models.towers.wide_tables``).

Example:
    >>> import torch
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> from recframe.models.towers import wide_tables
    >>> from recframe.sparse import Batch, KeyedJaggedTensor
    >>> tables = [TableConfig(name="t0", num_embeddings=100, embedding_dim=8, feature_names=["f0"]),
    ...           TableConfig(name="t1", num_embeddings=50, embedding_dim=4, feature_names=["f1"])]
    >>> opt = SparseOptimizer(name="adagrad", lr=0.05)
    >>> model = WideDeep(EmbeddingBagCollection(tables, opt, backend="torch"),
    ...                  EmbeddingBagCollection(wide_tables(tables), opt, backend="torch"),
    ...                  num_dense_features=3, deep_layer_sizes=[32, 16])
    >>> kjt = KeyedJaggedTensor.from_lengths(["f0", "f1"], torch.tensor([5, 6, 7]), torch.tensor([1, 1, 0, 1]))
    >>> model(Batch(torch.rand(2, 3), kjt, labels=torch.zeros(2))).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recframe.models import flops
from recframe.models._pooled import concat_pooled, pooled_feature_dims, stack_pooled
from recframe.models.heads import DEFAULT_TASKS, MultiTaskHead, Task, TaskLosses, check_tasks, shape_logits
from recframe.models.towers import MLP, Activation, Norm, WideLinear
from recframe.models.zoo import ModelContext, TaskConfig, one_task, register_model
from recframe.sparse import Batch


class WideDeep(nn.Module):
    """Wide & Deep with multi-task outputs.

    Args:
        embeddings: ``EmbeddingBagCollection`` of the deep part's sparse features (any dims).
        wide_embeddings: ``EmbeddingBagCollection`` of the wide part's sparse features, rows of dim
            ``len(tasks)`` (it may serve other features than the deep one, e.g. crosses).
        num_dense_features: number of dense inputs (0 allowed), fed to both parts.
        deep_layer_sizes: hidden layer sizes of the deep MLP; the head adds ``Linear(last, num_tasks)``.
        tasks: the prediction tasks, in label column order.
        activation: nonlinearity of the deep MLP.
        dropout: dropout after each hidden layer of the deep MLP.
        norm: normalization in the deep MLP (none, batch or layer).

    Example:
        >>> # see the module docstring
    """

    def __init__(
        self,
        embeddings: nn.Module,
        wide_embeddings: nn.Module,
        num_dense_features: int,
        deep_layer_sizes: Sequence[int],
        tasks: Sequence[Task] = DEFAULT_TASKS,
        activation: Activation = "relu",
        dropout: float = 0.0,
        norm: Norm = "none",
    ) -> None:
        super().__init__()
        num_tasks = len(check_tasks(tasks))
        self.features = pooled_feature_dims(embeddings)
        self.feature_names = [name for name, _ in self.features]
        wide_features = pooled_feature_dims(wide_embeddings)
        if any(dim != num_tasks for _, dim in wide_features):
            raise ValueError(f"WideDeep: wide_embeddings rows must have dim {num_tasks} (one weight per task), "
                             f"got {wide_features}")
        self.wide_feature_names = [name for name, _ in wide_features]
        self.num_dense_features = num_dense_features
        self.embeddings = embeddings
        self.wide_embeddings = wide_embeddings
        self.wide = WideLinear(num_dense_features, len(wide_features), num_tasks)
        deep_in = num_dense_features + sum(dim for _, dim in self.features)
        self.deep = MLP(deep_in, deep_layer_sizes, activation=activation, dropout=dropout, norm=norm)
        self.head = MultiTaskHead(self.deep.out_features, tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.head.tasks

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of ``batch``: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        dense = batch.dense_features
        if dense.dim() != 2 or dense.shape[1] != self.num_dense_features:
            raise ValueError(f"WideDeep was built for {self.num_dense_features} dense features; the batch has "
                             f"dense_features of shape {tuple(dense.shape)}")
        kjt = batch.sparse_features
        sparse = concat_pooled(self.embeddings(kjt), self.feature_names)
        per_id = stack_pooled(self.wide_embeddings(kjt), self.wide_feature_names, self.head.num_tasks)
        deep = self.head.linear(self.deep(torch.cat([dense, sparse], dim=1)))
        return shape_logits(self.wide(dense, per_id) + deep, self.head.num_tasks)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """Weighted sum of the tasks' binary cross-entropies (see ``heads.multi_task_loss``)."""
        return self.head.loss(logits, labels)

    def dense_parameter_count(self) -> int:
        """Parameters outside the two embedding collections."""
        return flops.dense_parameter_count(self, [self.embeddings, self.wide_embeddings])

    def dense_flops_per_sample(self) -> int:
        """Forward FLOPs per sample of the dense part: deep MLP, head, wide part, and ``T`` adds to combine."""
        return (flops.mlp_flops(self.deep) + flops.head_flops(self.head)
                + flops.wide_linear_flops(self.wide) + self.head.num_tasks)

    def dense_activations_per_sample(self) -> int:
        """Activation elements per sample the dense part's forward writes: the deep MLP's concatenated input, the
        MLP, the head, the wide part and the ``T`` sums (convention: ``recframe.models.flops``)."""
        return (self.deep.in_features + flops.mlp_activations(self.deep) + flops.head_activations(self.head)
                + flops.wide_linear_activations(self.wide) + self.head.num_tasks)


@dataclass
class WideDeepConfig:
    """Wide & Deep: a linear model over all features plus a deep MLP over the embeddings."""

    name: str = "wide_deep"  # model: wide_deep
    deep_mlp: list[int] = field(default_factory=lambda: [512, 256, 128])  # deep part hidden sizes
    dropout: float = 0.0  # dropout in the deep MLP
    tasks: list[TaskConfig] = field(default_factory=one_task)  # predicted labels


@register_model("wide_deep", schema=WideDeepConfig)
def build_wide_deep(node: Any, context: ModelContext) -> WideDeep:
    """Wide & Deep from its config node (``WideDeepConfig``)."""
    return WideDeep(embeddings=context.embeddings(None), wide_embeddings=context.wide_embeddings(len(context.tasks)),
                    num_dense_features=context.num_dense_features, deep_layer_sizes=list(node.deep_mlp),
                    tasks=context.tasks, dropout=node.dropout)

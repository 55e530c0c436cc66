"""DeepFM: a factorization machine (first- and second-order terms) and a deep MLP over shared fields.

Fields: each sparse feature's pooled embedding ``e_f`` (all of dim ``D``) and, for each dense
feature ``j``, ``x_j * v_j`` with a learned vector ``v_j`` of dim ``D`` (the FM treatment of a
real-valued input). For task ``t``:

    logit_t = wide_t(dense, per-id weights) + s_t * FM(fields) + head_t(MLP(flatten(fields)))

where ``FM`` is the second-order term, ``s_t`` a learned per-task scale (initialised to 1: the
classic DeepFM for one task) and ``wide_t`` the first-order term (a linear function of the dense
features plus one learned weight per id, held in a second embedding collection).

Two embedding collections, both swappable by a sharder: ``embeddings`` (the fields) and
``wide_embeddings`` (the per-id first-order weights, tables of dim ``num_tasks``; build them with
``recframe.models.towers.wide_tables``).

Example:
    >>> import torch
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> from recframe.models.towers import wide_tables
    >>> from recframe.sparse import Batch, KeyedJaggedTensor
    >>> tables = [TableConfig(name=f"t{i}", num_embeddings=100, embedding_dim=8, feature_names=[f"f{i}"])
    ...           for i in range(2)]
    >>> opt = SparseOptimizer(name="adagrad", lr=0.05)
    >>> model = DeepFM(EmbeddingBagCollection(tables, opt, backend="torch"),
    ...                EmbeddingBagCollection(wide_tables(tables, 2), opt, backend="torch"),
    ...                num_dense_features=3, deep_layer_sizes=[32, 16], tasks=[Task("click"), Task("purchase")])
    >>> kjt = KeyedJaggedTensor.from_lengths(["f0", "f1"], torch.tensor([5, 6, 7]), torch.tensor([1, 1, 0, 1]))
    >>> model(Batch(torch.rand(2, 3), kjt, labels=torch.zeros(2, 2))).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recframe.models import flops
from recframe.models._pooled import pooled_feature_dims, stack_pooled, uniform_dim
from recframe.models.heads import DEFAULT_TASKS, MultiTaskHead, Task, TaskLosses, check_tasks, shape_logits
from recframe.models.interactions import FMInteraction
from recframe.models.towers import MLP, Activation, WideLinear
from recframe.models.zoo import ModelContext, TaskConfig, one_task, register_model, same_dim_problems
from recframe.sparse import Batch


class DeepFM(nn.Module):
    """DeepFM (Guo et al., 2017) with dense features as FM fields and multi-task outputs.

    Args:
        embeddings: ``EmbeddingBagCollection`` of the sparse features, all of one dim ``D``.
        wide_embeddings: ``EmbeddingBagCollection`` over the same features, in the same order, with
            rows of dim ``len(tasks)`` (see ``towers.wide_tables``).
        num_dense_features: number of dense inputs (0 allowed).
        deep_layer_sizes: hidden layer sizes of the deep MLP; the head adds ``Linear(last, num_tasks)``.
        tasks: the prediction tasks, in label column order.
        activation: nonlinearity of the deep MLP.
        dropout: dropout after each hidden layer of the deep MLP.

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
    ) -> None:
        super().__init__()
        self.features = pooled_feature_dims(embeddings)
        self.feature_names = [name for name, _ in self.features]
        self.embedding_dim = uniform_dim(self.features, "DeepFM")
        num_tasks = len(check_tasks(tasks))
        wide_features = pooled_feature_dims(wide_embeddings)
        if wide_features != [(name, num_tasks) for name in self.feature_names]:
            raise ValueError(f"DeepFM: wide_embeddings must serve the features {self.feature_names} in that order "
                             f"with dim {num_tasks} (one weight per task), got {wide_features}")
        self.num_dense_features = num_dense_features
        self.embeddings = embeddings
        self.wide_embeddings = wide_embeddings
        d = self.embedding_dim
        # small, as DeepFM's embeddings usually start: the FM sums O(fields^2) products, and unit-scale
        # vectors on 13 Criteo dense features make initial logits of several units (loss ~2)
        self.dense_fields = nn.Parameter(torch.randn(num_dense_features, d) * 0.01)
        self.num_fields = len(self.features) + num_dense_features
        self.fm = FMInteraction(reduce=True)
        self.fm_scale = nn.Parameter(torch.ones(num_tasks))
        self.wide = WideLinear(num_dense_features, len(self.features), num_tasks)
        self.deep = MLP(self.num_fields * d, deep_layer_sizes, activation=activation, dropout=dropout)
        self.head = MultiTaskHead(self.deep.out_features, tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.head.tasks

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of ``batch``: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        dense = batch.dense_features
        if dense.dim() != 2 or dense.shape[1] != self.num_dense_features:
            raise ValueError(f"DeepFM was built for {self.num_dense_features} dense features; the batch has "
                             f"dense_features of shape {tuple(dense.shape)}")
        kjt = batch.sparse_features
        sparse = stack_pooled(self.embeddings(kjt), self.feature_names, self.embedding_dim)  # [B, F, D]
        fields = torch.cat([sparse, dense.unsqueeze(2) * self.dense_fields], dim=1)  # [B, F + n, D]
        first_order = stack_pooled(self.wide_embeddings(kjt), self.feature_names, self.head.num_tasks)
        wide = self.wide(dense, first_order)  # [B, T]
        deep = self.head.linear(self.deep(fields.flatten(1)))  # [B, T]
        return shape_logits(wide + self.fm(fields) * self.fm_scale + deep, self.head.num_tasks)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """Weighted sum of the tasks' binary cross-entropies (see ``heads.multi_task_loss``)."""
        return self.head.loss(logits, labels)

    def dense_parameter_count(self) -> int:
        """Parameters outside the two embedding collections."""
        return flops.dense_parameter_count(self, [self.embeddings, self.wide_embeddings])

    def dense_flops_per_sample(self) -> int:
        """Forward FLOPs per sample of the dense part (convention: ``recframe.models.flops``).

        Dense fields ``x_j * v_j``: ``n * D``; FM over ``F + n`` fields; deep MLP and head; wide part;
        combining: ``T`` (FM scale) + ``2T`` (two adds).
        """
        t = self.head.num_tasks
        return (self.num_dense_features * self.embedding_dim
                + flops.fm_flops(self.fm, self.num_fields, self.embedding_dim)
                + flops.mlp_flops(self.deep)
                + flops.head_flops(self.head)
                + flops.wide_linear_flops(self.wide)
                + 3 * t)

    def dense_activations_per_sample(self) -> int:
        """Activation elements per sample the dense part's forward writes (convention: ``recframe.models.flops``).

        Dense fields ``x_j * v_j``: ``n * D``; the concatenated fields ``(F + n) * D``; FM; deep MLP and head;
        wide part; combining: ``3T`` (FM scaled, two sums).
        """
        t, d = self.head.num_tasks, self.embedding_dim
        return (self.num_dense_features * d + self.num_fields * d
                + flops.fm_activations(self.fm, self.num_fields, d)
                + flops.mlp_activations(self.deep)
                + flops.head_activations(self.head)
                + flops.wide_linear_activations(self.wide)
                + 3 * t)


@dataclass
class DeepFMConfig:
    """DeepFM: first-order (wide) + FM second-order term + deep MLP over the embeddings."""

    name: str = "deepfm"  # model: deepfm
    deep_mlp: list[int] = field(default_factory=lambda: [400, 400, 400])  # deep part hidden sizes
    dropout: float = 0.0  # dropout in the deep MLP
    tasks: list[TaskConfig] = field(default_factory=one_task)  # predicted labels


@register_model("deepfm", schema=DeepFMConfig,
                check=lambda node, ctx: same_dim_problems("deepfm", "FM interaction", ctx.dims))
def build_deepfm(node: Any, context: ModelContext) -> DeepFM:
    """DeepFM from its config node (``DeepFMConfig``)."""
    return DeepFM(embeddings=context.embeddings(None), wide_embeddings=context.wide_embeddings(len(context.tasks)),
                  num_dense_features=context.num_dense_features, deep_layer_sizes=list(node.deep_mlp),
                  tasks=context.tasks, dropout=node.dropout)

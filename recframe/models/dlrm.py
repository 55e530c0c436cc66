"""DLRM (dot interaction) and DLRM-DCNv2 (low-rank cross network, as in MLPerf's DLRM-DCNv2).

Both take a ``Batch`` and return logits (``[batch]`` for one task, ``[batch, num_tasks]`` for
several). The embedding collection is the attribute ``embeddings``; the model only ever calls
``self.embeddings(kjt)`` and reads the returned ``KeyedTensor`` by feature name, so a sharder
can replace that attribute with a sharded collection of the same call signature.

Example:
    >>> import torch
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> from recframe.sparse import Batch, KeyedJaggedTensor
    >>> tables = [TableConfig(name=f"t{i}", num_embeddings=100, embedding_dim=16, feature_names=[f"f{i}"])
    ...           for i in range(3)]
    >>> ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad", lr=0.05), backend="torch")
    >>> model = DLRM(ebc, num_dense_features=13, dense_layer_sizes=[64, 16], over_layer_sizes=[32],
    ...              tasks=[Task("click"), Task("purchase")])
    >>> kjt = KeyedJaggedTensor.from_lengths(["f0", "f1", "f2"], torch.tensor([1, 2, 3, 4]),
    ...                                      torch.tensor([1, 0, 1, 1, 0, 1]))  # batch of 2
    >>> batch = Batch(torch.rand(2, 13), kjt, labels=torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    >>> logits = model(batch)
    >>> logits.shape
    torch.Size([2, 2])
    >>> model.loss(logits, batch.labels).total.backward()  # the touched table rows are updated here
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recframe.models import flops
from recframe.models._pooled import concat_pooled, pooled_feature_dims, stack_pooled, uniform_dim
from recframe.models.heads import DEFAULT_TASKS, MultiTaskHead, Task, TaskLosses
from recframe.models.interactions import DotInteraction, LowRankCrossNet
from recframe.models.towers import MLP, Activation
from recframe.models.zoo import CheckContext, ConfigProblem, ModelContext, TaskConfig, one_task, register_model
from recframe.sparse import Batch


def _check_dense(batch: Batch, expected: int, model: str) -> None:
    if batch.dense_features.dim() != 2 or batch.dense_features.shape[1] != expected:
        raise ValueError(f"{model} was built for {expected} dense features; the batch has dense_features of "
                         f"shape {tuple(batch.dense_features.shape)}")


class DLRM(nn.Module):
    """DLRM: bottom MLP over dense features -> dot interaction with pooled embeddings -> top MLP -> head.

    Args:
        embeddings: the ``EmbeddingBagCollection`` of the sparse features; every feature's dim must
            equal ``dense_layer_sizes[-1]``. Kept as ``self.embeddings`` (a sharder swaps it).
        num_dense_features: number of dense inputs (>= 1).
        dense_layer_sizes: the bottom MLP's layer sizes; the last one is the embedding dim.
        over_layer_sizes: the top MLP's hidden layer sizes; the head adds ``Linear(last, num_tasks)``
            (so MLPerf's top "1024-1024-512-256-1" is ``[1024, 1024, 512, 256]`` with one task).
        tasks: the prediction tasks, in label column order.
        self_interaction: also keep each vector's dot product with itself.
        activation: nonlinearity of both MLPs.
        dropout: dropout after each hidden layer of the top MLP.

    Example:
        >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
        >>> table = TableConfig(name="t", num_embeddings=10, embedding_dim=16, feature_names=["f0", "f1"])
        >>> ebc = EmbeddingBagCollection([table], SparseOptimizer(), backend="torch")
        >>> model = DLRM(ebc, 13, dense_layer_sizes=[64, 16], over_layer_sizes=[32])
        >>> model.interaction.output_dim(16), model.dense_flops_per_sample(), model.dense_parameter_count()
        (19, 5201, 2609)
    """

    def __init__(
        self,
        embeddings: nn.Module,
        num_dense_features: int,
        dense_layer_sizes: Sequence[int],
        over_layer_sizes: Sequence[int],
        tasks: Sequence[Task] = DEFAULT_TASKS,
        self_interaction: bool = False,
        activation: Activation = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = pooled_feature_dims(embeddings)
        self.feature_names = [name for name, _ in self.features]
        self.embedding_dim = uniform_dim(self.features, "DLRM")
        if not dense_layer_sizes or dense_layer_sizes[-1] != self.embedding_dim:
            raise ValueError(f"DLRM: the bottom MLP must end at the embedding dim {self.embedding_dim}, "
                             f"got dense_layer_sizes={list(dense_layer_sizes)}")
        self.num_dense_features = num_dense_features
        self.embeddings = embeddings
        self.dense_arch = MLP(num_dense_features, dense_layer_sizes, activation=activation)
        self.interaction = DotInteraction(len(self.features), self_interaction=self_interaction)
        self.over_arch = MLP(self.interaction.output_dim(self.embedding_dim), over_layer_sizes,
                             activation=activation, dropout=dropout)
        self.head = MultiTaskHead(self.over_arch.out_features, tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.head.tasks

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of ``batch``: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        _check_dense(batch, self.num_dense_features, "DLRM")
        dense = self.dense_arch(batch.dense_features)
        sparse = stack_pooled(self.embeddings(batch.sparse_features), self.feature_names, self.embedding_dim)
        return self.head(self.over_arch(self.interaction(dense, sparse)))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """Weighted sum of the tasks' binary cross-entropies (see ``heads.multi_task_loss``)."""
        return self.head.loss(logits, labels)

    def dense_parameter_count(self) -> int:
        """Parameters outside the embedding tables."""
        return flops.dense_parameter_count(self, [self.embeddings])

    def dense_flops_per_sample(self) -> int:
        """Forward FLOPs per sample of the dense part (convention: ``recframe.models.flops``)."""
        return (flops.mlp_flops(self.dense_arch)
                + flops.dot_interaction_flops(self.interaction, self.embedding_dim)
                + flops.mlp_flops(self.over_arch)
                + flops.head_flops(self.head))


class DLRM_DCN(nn.Module):  # noqa: N801 (the model's published name)
    """DLRM-DCNv2 (MLPerf): bottom MLP -> concat with pooled embeddings -> low-rank cross net -> top MLP -> head.

    The dense embedding (bottom MLP output) and the pooled embeddings are concatenated into one
    vector of width ``dense_layer_sizes[-1] + sum of embedding dims`` (3456 for MLPerf: 27 x 128),
    crossed by ``num_cross_layers`` low-rank layers, and fed to the top MLP. Embedding dims may differ.

    Args:
        embeddings: the ``EmbeddingBagCollection`` of the sparse features; kept as ``self.embeddings``.
        num_dense_features: number of dense inputs (>= 1).
        dense_layer_sizes: the bottom MLP's layer sizes (MLPerf: 512, 256, 128).
        over_layer_sizes: the top MLP's hidden sizes; the head adds ``Linear(last, num_tasks)``
            (MLPerf: 1024, 1024, 512, 256 and one task).
        num_cross_layers: low-rank cross layers (MLPerf: 3).
        low_rank: rank of each cross layer (MLPerf: 512).
        tasks: the prediction tasks, in label column order.
        activation: nonlinearity of both MLPs.
        dropout: dropout after each hidden layer of the top MLP.

    Example:
        >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
        >>> table = TableConfig(name="t", num_embeddings=10, embedding_dim=16, feature_names=["f0", "f1"])
        >>> ebc = EmbeddingBagCollection([table], SparseOptimizer(), backend="torch")
        >>> model = DLRM_DCN(ebc, 13, [64, 16], [32, 16], num_cross_layers=3, low_rank=8)
        >>> model.interaction.in_features, model.dense_flops_per_sample()  # cross width: 16 + 2 * 16
        (48, 13009)
    """

    def __init__(
        self,
        embeddings: nn.Module,
        num_dense_features: int,
        dense_layer_sizes: Sequence[int],
        over_layer_sizes: Sequence[int],
        num_cross_layers: int = 3,
        low_rank: int = 512,
        tasks: Sequence[Task] = DEFAULT_TASKS,
        activation: Activation = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = pooled_feature_dims(embeddings)
        self.feature_names = [name for name, _ in self.features]
        self.num_dense_features = num_dense_features
        self.embeddings = embeddings
        self.dense_arch = MLP(num_dense_features, dense_layer_sizes, activation=activation)
        width = self.dense_arch.out_features + sum(dim for _, dim in self.features)
        self.interaction = LowRankCrossNet(width, num_cross_layers, low_rank)
        self.over_arch = MLP(width, over_layer_sizes, activation=activation, dropout=dropout)
        self.head = MultiTaskHead(self.over_arch.out_features, tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.head.tasks

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of ``batch``: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        _check_dense(batch, self.num_dense_features, "DLRM_DCN")
        dense = self.dense_arch(batch.dense_features)
        sparse = concat_pooled(self.embeddings(batch.sparse_features), self.feature_names)
        return self.head(self.over_arch(self.interaction(torch.cat([dense, sparse], dim=1))))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """Weighted sum of the tasks' binary cross-entropies (see ``heads.multi_task_loss``)."""
        return self.head.loss(logits, labels)

    def dense_parameter_count(self) -> int:
        """Parameters outside the embedding tables."""
        return flops.dense_parameter_count(self, [self.embeddings])

    def dense_flops_per_sample(self) -> int:
        """Forward FLOPs per sample of the dense part (convention: ``recframe.models.flops``)."""
        return (flops.mlp_flops(self.dense_arch)
                + flops.low_rank_cross_net_flops(self.interaction)
                + flops.mlp_flops(self.over_arch)
                + flops.head_flops(self.head))


# ---- the zoo's entries: config schemas, builders, checks ---------------------------------------
@dataclass
class DLRMConfig:
    """DLRM: bottom MLP over dense features, pairwise dot interaction, top MLP."""

    name: str = "dlrm"  # model: dlrm
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])  # last size = embedding dim
    top_mlp: list[int] = field(default_factory=lambda: [512, 256])  # hidden sizes before the task head
    dropout: float = 0.0  # dropout in the top MLP
    tasks: list[TaskConfig] = field(default_factory=one_task)  # predicted labels, in label-column order


@dataclass
class DLRMDCNConfig:
    """DLRM with a DCNv2 low-rank cross network as interaction (the MLPerf DLRM-DCNv2 model)."""

    name: str = "dlrm_dcn"  # model: dlrm_dcn
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])  # last size = embedding dim
    top_mlp: list[int] = field(default_factory=lambda: [1024, 1024, 512, 256])  # hidden sizes before the head
    dcn_num_layers: int = 3  # cross layers
    dcn_low_rank_dim: int = 512  # rank of each cross layer's weight
    dropout: float = 0.0  # dropout in the top MLP
    tasks: list[TaskConfig] = field(default_factory=one_task)  # predicted labels


def _bottom_mlp_problems(node: Any, context: CheckContext, dot: bool) -> list[ConfigProblem]:
    """A bottom MLP is needed; with the dot interaction its last size is every table's dim."""
    if not node.bottom_mlp:
        return [("model.bottom_mlp", "needs at least one layer", "")]
    mismatched = {n: d for n, d in context.dims.items() if d != node.bottom_mlp[-1]}
    if dot and mismatched:
        return [("model.bottom_mlp", f"the last size ({node.bottom_mlp[-1]}) must equal the embedding dim of every "
                 f"table for the dot interaction; tables differ: {mismatched}",
                 "set model.bottom_mlp's last size or tables.embedding_dim to the same value")]
    return []


@register_model("dlrm", schema=DLRMConfig, check=lambda node, ctx: _bottom_mlp_problems(node, ctx, dot=True))
def build_dlrm(node: Any, context: ModelContext) -> DLRM:
    """DLRM from its config node (``DLRMConfig``)."""
    return DLRM(embeddings=context.embeddings(None), num_dense_features=context.num_dense_features,
                dense_layer_sizes=list(node.bottom_mlp), over_layer_sizes=list(node.top_mlp), tasks=context.tasks,
                dropout=node.dropout)


@register_model("dlrm_dcn", schema=DLRMDCNConfig, check=lambda node, ctx: _bottom_mlp_problems(node, ctx, dot=False))
def build_dlrm_dcn(node: Any, context: ModelContext) -> DLRM_DCN:
    """DLRM-DCNv2 from its config node (``DLRMDCNConfig``)."""
    return DLRM_DCN(embeddings=context.embeddings(None), num_dense_features=context.num_dense_features,
                    dense_layer_sizes=list(node.bottom_mlp), over_layer_sizes=list(node.top_mlp),
                    num_cross_layers=node.dcn_num_layers, low_rank=node.dcn_low_rank_dim, tasks=context.tasks,
                    dropout=node.dropout)

"""DLRM (dot interaction) and DLRM-DCNv2 (low-rank cross network, as in MLPerf's DLRM-DCNv2).

Both take a ``Batch`` and return logits (``[batch]`` for one task, ``[batch, num_tasks]`` for
several). The embedding collection is the attribute ``embeddings``; the model only ever calls
``self.embeddings(kjt)`` and reads the returned ``KeyedTensor`` by feature name, so a sharder
can replace that attribute with a sharded collection of the same call signature. The bottom MLP
runs between that call and the first read of the pooled values: a sharded collection's output
all-to-all (forward, and its gradients' in backward) travels meanwhile.

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
from recframe.models.zoo import (
    CheckContext,
    ConfigProblem,
    ModelContext,
    TaskConfig,
    one_task,
    register_model,
    same_dim_problems,
)
from recframe.sparse import Batch


def _check_dense(batch: Batch, expected: int, model: str) -> None:
    if batch.dense_features.dim() != 2 or batch.dense_features.shape[1] != expected:
        raise ValueError(f"{model} was built for {expected} dense features; the batch has dense_features of "
                         f"shape {tuple(batch.dense_features.shape)}")


def _bottom_mlp(num_dense: int, sizes: Sequence[int], activation: Activation, num_sparse: int) -> MLP | None:
    """The bottom MLP over ``num_dense`` inputs, or None without dense features (then there must be sparse ones).

    Example:
        >>> _bottom_mlp(0, [64, 16], "relu", num_sparse=3) is None
        True
    """
    if num_dense < 0 or (num_dense == 0 and num_sparse == 0):
        raise ValueError(f"DLRM needs features: got {num_dense} dense and {num_sparse} sparse")
    return MLP(num_dense, sizes, activation=activation) if num_dense else None


def in_autocast_dtype(values: torch.Tensor) -> torch.Tensor:
    """``values`` in autocast's dtype where autocast is on for their device, else as they are.

    DLRM-DCN's cross net casts its input to autocast's dtype first (``LowRankCrossNet``); casting the pooled
    embeddings before they join the bottom MLP's output (already in that dtype under autocast) gives the same
    numbers, bit for bit, without a concatenation in fp32, and their gradient reaches the tables contiguous
    (the fp32 concatenation's gradient slice was copied again by the embedding backward).

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     in_autocast_dtype(torch.ones(2, 3)).dtype
        torch.bfloat16
        >>> in_autocast_dtype(torch.ones(2, 3)).dtype
        torch.float32
    """
    device = values.device.type
    if torch.is_autocast_enabled(device) and values.is_floating_point():
        return values.to(torch.get_autocast_dtype(device))
    return values


def _mlp_flops(mlp: MLP | None) -> int:
    """``flops.mlp_flops`` of an MLP, 0 for none."""
    return flops.mlp_flops(mlp) if mlp is not None else 0


def _mlp_activations(mlp: MLP | None) -> int:
    """``flops.mlp_activations`` of an MLP, 0 for none."""
    return flops.mlp_activations(mlp) if mlp is not None else 0


class DLRM(nn.Module):
    """DLRM: bottom MLP over dense features -> dot interaction with pooled embeddings -> top MLP -> head.

    Without dense features (a table of categorical columns only) there is no bottom MLP: the dot
    products are those of the ``F`` pooled embeddings with each other, and the top MLP reads them
    after the embeddings themselves (in the place of DLRM's dense skip connection).

    Args:
        embeddings: the ``EmbeddingBagCollection`` of the sparse features; every feature's dim must
            equal ``dense_layer_sizes[-1]``. Kept as ``self.embeddings`` (a sharder swaps it).
        num_dense_features: number of dense inputs (0: no bottom MLP, see above).
        dense_layer_sizes: the bottom MLP's layer sizes; the last one is the embedding dim (unused
            without dense features).
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
        >>> model.dense_activations_per_sample()  # (64 + 16) + (3 x 16 + 3 + 19) + 32 + 1
        183
        >>> DLRM(ebc, 0, dense_layer_sizes=[], over_layer_sizes=[32]).over_arch.in_features  # 2 * 16 + 1 pair
        33
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
        if num_dense_features and (not dense_layer_sizes or dense_layer_sizes[-1] != self.embedding_dim):
            raise ValueError(f"DLRM: the bottom MLP must end at the embedding dim {self.embedding_dim}, "
                             f"got dense_layer_sizes={list(dense_layer_sizes)}")
        self.num_dense_features = num_dense_features
        self.embeddings = embeddings
        self.dense_arch = _bottom_mlp(num_dense_features, dense_layer_sizes, activation, len(self.features))
        if self.dense_arch is not None:
            self.interaction = DotInteraction(len(self.features), self_interaction=self_interaction)
            over_in = self.interaction.output_dim(self.embedding_dim)
        else:  # the first embedding takes the dense vector's place in the interaction; all of them are the skip
            self.interaction = DotInteraction(len(self.features) - 1, self_interaction=self_interaction,
                                              skip_dense=False)
            over_in = self.interaction.num_pairs + len(self.features) * self.embedding_dim
        self.over_arch = MLP(over_in, over_layer_sizes, activation=activation, dropout=dropout)
        self.head = MultiTaskHead(self.over_arch.out_features, tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.head.tasks

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of ``batch``: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        _check_dense(batch, self.num_dense_features, "DLRM")
        pooled = self.embeddings(batch.sparse_features)  # sharded: its output all-to-all may still be in flight
        if self.dense_arch is None:
            sparse = stack_pooled(pooled, self.feature_names, self.embedding_dim)
            pairs = self.interaction(sparse[:, 0], sparse[:, 1:])
            return self.head(self.over_arch(torch.cat([sparse.flatten(1), pairs], dim=1)))
        dense = self.dense_arch(batch.dense_features)  # before the first read of ``pooled``: overlaps the exchange
        sparse = stack_pooled(pooled, self.feature_names, self.embedding_dim)
        return self.head(self.over_arch(self.interaction(dense, sparse)))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """Weighted sum of the tasks' binary cross-entropies (see ``heads.multi_task_loss``)."""
        return self.head.loss(logits, labels)

    def dense_parameter_count(self) -> int:
        """Parameters outside the embedding tables."""
        return flops.dense_parameter_count(self, [self.embeddings])

    def dense_flops_per_sample(self) -> int:
        """Forward FLOPs per sample of the dense part (convention: ``recframe.models.flops``)."""
        return (_mlp_flops(self.dense_arch)
                + flops.dot_interaction_flops(self.interaction, self.embedding_dim)
                + flops.mlp_flops(self.over_arch)
                + flops.head_flops(self.head))

    def dense_activations_per_sample(self) -> int:
        """Activation elements per sample the dense part's forward writes (convention: ``recframe.models.flops``):
        the MLPs, the interaction and the head; without dense features, also the top MLP's concatenated input."""
        concat = 0 if self.dense_arch is not None else self.over_arch.in_features
        return (_mlp_activations(self.dense_arch)
                + flops.dot_interaction_activations(self.interaction, self.embedding_dim) + concat
                + flops.mlp_activations(self.over_arch)
                + flops.head_activations(self.head))


class DLRM_DCN(nn.Module):  # noqa: N801 (the model's published name)
    """DLRM-DCNv2 (MLPerf): bottom MLP -> concat with pooled embeddings -> low-rank cross net -> top MLP -> head.

    The dense embedding (bottom MLP output) and the pooled embeddings are concatenated into one
    vector of width ``dense_layer_sizes[-1] + sum of embedding dims`` (3456 for MLPerf: 27 x 128),
    crossed by ``num_cross_layers`` low-rank layers, and fed to the top MLP. Embedding dims may differ.

    Args:
        embeddings: the ``EmbeddingBagCollection`` of the sparse features; kept as ``self.embeddings``.
        num_dense_features: number of dense inputs (0: no bottom MLP; the cross net reads the embeddings only).
        dense_layer_sizes: the bottom MLP's layer sizes (MLPerf: 512, 256, 128; unused without dense features).
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
        >>> model.dense_activations_per_sample()  # (64 + 16) + 48 + 3 x (8 + 2 x 48) + (32 + 16) + 1
        489
        >>> DLRM_DCN(ebc, 0, [], [32, 16], num_cross_layers=3, low_rank=8).interaction.in_features  # no dense
        32
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
        self.dense_arch = _bottom_mlp(num_dense_features, dense_layer_sizes, activation, len(self.features))
        width = (self.dense_arch.out_features if self.dense_arch is not None else 0) + sum(d for _, d in self.features)
        self.interaction = LowRankCrossNet(width, num_cross_layers, low_rank)
        self.over_arch = MLP(width, over_layer_sizes, activation=activation, dropout=dropout)
        self.head = MultiTaskHead(self.over_arch.out_features, tasks)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.head.tasks

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits of ``batch``: ``[batch]`` for one task, else ``[batch, num_tasks]``."""
        _check_dense(batch, self.num_dense_features, "DLRM_DCN")
        pooled = self.embeddings(batch.sparse_features)  # sharded: its output all-to-all may still be in flight
        if self.dense_arch is None:
            return self.head(self.over_arch(self.interaction(concat_pooled(pooled, self.feature_names))))
        dense = self.dense_arch(batch.dense_features)  # before the first read of ``pooled``: overlaps the exchange
        sparse = torch.cat([dense, in_autocast_dtype(concat_pooled(pooled, self.feature_names))], dim=1)
        return self.head(self.over_arch(self.interaction(sparse)))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> TaskLosses:
        """Weighted sum of the tasks' binary cross-entropies (see ``heads.multi_task_loss``)."""
        return self.head.loss(logits, labels)

    def dense_parameter_count(self) -> int:
        """Parameters outside the embedding tables."""
        return flops.dense_parameter_count(self, [self.embeddings])

    def dense_flops_per_sample(self) -> int:
        """Forward FLOPs per sample of the dense part (convention: ``recframe.models.flops``)."""
        return (_mlp_flops(self.dense_arch)
                + flops.low_rank_cross_net_flops(self.interaction)
                + flops.mlp_flops(self.over_arch)
                + flops.head_flops(self.head))

    def dense_activations_per_sample(self) -> int:
        """Activation elements per sample the dense part's forward writes (convention: ``recframe.models.flops``):
        the bottom MLP, the concatenated cross input (with dense features), the cross net, the top MLP, the head."""
        concat = self.interaction.in_features if self.dense_arch is not None else 0
        return (_mlp_activations(self.dense_arch) + concat
                + flops.low_rank_cross_net_activations(self.interaction)
                + flops.mlp_activations(self.over_arch)
                + flops.head_activations(self.head))


# ---- the zoo's entries: config schemas, builders, checks ---------------------------------------
@dataclass
class DLRMConfig:
    """DLRM: bottom MLP over dense features, pairwise dot interaction, top MLP."""

    name: str = "dlrm"  # model: dlrm
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])  # last size = embedding dim (unused
    # without dense features: no bottom MLP then)
    top_mlp: list[int] = field(default_factory=lambda: [512, 256])  # hidden sizes before the task head
    dropout: float = 0.0  # dropout in the top MLP
    tasks: list[TaskConfig] = field(default_factory=one_task)  # predicted labels, in label-column order


@dataclass
class DLRMDCNConfig:
    """DLRM with a DCNv2 low-rank cross network as interaction (the MLPerf DLRM-DCNv2 model)."""

    name: str = "dlrm_dcn"  # model: dlrm_dcn
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])  # its output joins the cross net's input
    # (unused without dense features)
    top_mlp: list[int] = field(default_factory=lambda: [1024, 1024, 512, 256])  # hidden sizes before the head
    dcn_num_layers: int = 3  # cross layers
    dcn_low_rank_dim: int = 512  # rank of each cross layer's weight
    dropout: float = 0.0  # dropout in the top MLP
    tasks: list[TaskConfig] = field(default_factory=one_task)  # predicted labels


def _bottom_mlp_problems(node: Any, context: CheckContext, dot: bool) -> list[ConfigProblem]:
    """With dense features a bottom MLP is needed; with the dot interaction its last size is every table's dim.

    Without dense features there is no bottom MLP, and the dot interaction needs one dim for all tables.
    """
    if not context.num_dense_features:
        if not context.sparse_features:
            return [("features", "the model has no input: no dense and no sparse features", "")]
        return same_dim_problems("dlrm", "dot interaction", context.dims) if dot else []
    if not node.bottom_mlp:
        return [("model.bottom_mlp", "needs at least one layer", "")]
    mismatched = {n: d for n, d in context.dims.items() if d != node.bottom_mlp[-1]}
    if dot and mismatched:
        return [("model.bottom_mlp", f"the last size ({node.bottom_mlp[-1]}) must equal the embedding dim of every "
                 f"table for the dot interaction; tables differ: {mismatched}",
                 "set model.bottom_mlp's last size or tables.embedding_dim to the same value")]
    return []


# DLRM reads its pooled embeddings in autocast's dtype where it has dense features (the dot interaction's bmm
# casts them: the same numbers, bit for bit); without dense features they also feed the top MLP, and their two
# gradients would be summed in bf16 instead of fp32.
@register_model("dlrm", schema=DLRMConfig, check=lambda node, ctx: _bottom_mlp_problems(node, ctx, dot=True),
                pooled_in_autocast_dtype=lambda node, num_dense: num_dense > 0)
def build_dlrm(node: Any, context: ModelContext) -> DLRM:
    """DLRM from its config node (``DLRMConfig``)."""
    return DLRM(embeddings=context.embeddings(None), num_dense_features=context.num_dense_features,
                dense_layer_sizes=list(node.bottom_mlp), over_layer_sizes=list(node.top_mlp), tasks=context.tasks,
                dropout=node.dropout)


@register_model("dlrm_dcn", schema=DLRMDCNConfig, check=lambda node, ctx: _bottom_mlp_problems(node, ctx, dot=False),
                pooled_in_autocast_dtype=True)  # its cross net reads them in autocast's dtype (``in_autocast_dtype``)
def build_dlrm_dcn(node: Any, context: ModelContext) -> DLRM_DCN:
    """DLRM-DCNv2 from its config node (``DLRMDCNConfig``)."""
    return DLRM_DCN(embeddings=context.embeddings(None), num_dense_features=context.num_dense_features,
                    dense_layer_sizes=list(node.bottom_mlp), over_layer_sizes=list(node.top_mlp),
                    num_cross_layers=node.dcn_num_layers, low_rank=node.dcn_low_rank_dim, tasks=context.tasks,
                    dropout=node.dropout)

"""Schemas of the ``model`` config group: one per model (``model.name``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskConfig:
    """One prediction target: a label column."""

    name: str = "click"  # task name: train/loss_<name>; val/<name>/auc with several tasks
    weight: float = 1.0  # weight of its loss in the total loss


def _one_task() -> list[TaskConfig]:
    return [TaskConfig()]


@dataclass
class DLRMConfig:
    """DLRM: bottom MLP over dense features, pairwise dot interaction, top MLP."""

    name: str = "dlrm"  # model: dlrm
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])  # last size = embedding dim
    top_mlp: list[int] = field(default_factory=lambda: [512, 256])  # hidden sizes before the task head
    dropout: float = 0.0  # dropout in the top MLP
    tasks: list[TaskConfig] = field(default_factory=_one_task)  # predicted labels, in label-column order


@dataclass
class DLRMDCNConfig:
    """DLRM with a DCNv2 low-rank cross network as interaction (the MLPerf DLRM-DCNv2 model)."""

    name: str = "dlrm_dcn"  # model: dlrm_dcn
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])  # last size = embedding dim
    top_mlp: list[int] = field(default_factory=lambda: [1024, 1024, 512, 256])  # hidden sizes before the head
    dcn_num_layers: int = 3  # cross layers
    dcn_low_rank_dim: int = 512  # rank of each cross layer's weight
    dropout: float = 0.0  # dropout in the top MLP
    tasks: list[TaskConfig] = field(default_factory=_one_task)  # predicted labels


@dataclass
class DeepFMConfig:
    """DeepFM: first-order (wide) + FM second-order term + deep MLP over the embeddings."""

    name: str = "deepfm"  # model: deepfm
    deep_mlp: list[int] = field(default_factory=lambda: [400, 400, 400])  # deep part hidden sizes
    dropout: float = 0.0  # dropout in the deep MLP
    tasks: list[TaskConfig] = field(default_factory=_one_task)  # predicted labels


@dataclass
class WideDeepConfig:
    """Wide & Deep: a linear model over all features plus a deep MLP over the embeddings."""

    name: str = "wide_deep"  # model: wide_deep
    deep_mlp: list[int] = field(default_factory=lambda: [512, 256, 128])  # deep part hidden sizes
    dropout: float = 0.0  # dropout in the deep MLP
    tasks: list[TaskConfig] = field(default_factory=_one_task)  # predicted labels


@dataclass
class TwoTowerConfig:
    """Two towers (user, item) trained with an in-batch softmax, for retrieval."""

    name: str = "two_tower"  # model: two_tower
    user_features: list[str] = field(default_factory=list)  # sparse features of the user tower
    item_features: list[str] = field(default_factory=list)  # sparse features of the item tower
    tower_mlp: list[int] = field(default_factory=lambda: [128, 64])  # each tower's MLP; last = output dim
    temperature: float = 0.05  # softmax temperature of the in-batch loss
    recall_ks: list[int] = field(default_factory=lambda: [1, 10, 50])  # k of the recall@k validation metrics


MODEL_SCHEMAS: dict[str, type] = {
    "dlrm": DLRMConfig,
    "dlrm_dcn": DLRMDCNConfig,
    "deepfm": DeepFMConfig,
    "wide_deep": WideDeepConfig,
    "two_tower": TwoTowerConfig,
}

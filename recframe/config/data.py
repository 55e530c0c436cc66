"""Schemas of the ``data`` config group: one per data source (``data.kind``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SyntheticDataConfig:
    """Criteo-shaped synthetic clicks with labels from a hidden model (recframe.data.synthetic)."""

    kind: str = "synthetic"  # data source: synthetic
    batch_size: int = 2048  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    num_val_batches: int = 10  # batches of the fixed validation set (never seen in training)
    ids_per_feature: list[int] = field(default_factory=lambda: [1])  # ids per sample per sparse feature (one value: all)
    zipf_exponent: float = 1.05  # skew of id frequencies (0: uniform)
    signal_strength: float = 2.0  # scale of the hidden model's logits (higher: an easier task)
    seed: int = 1234  # seed of the hidden model and of the sample stream


@dataclass
class SyntheticRetrievalDataConfig:
    """Synthetic (user, item) pairs from hidden user clusters, for two-tower retrieval."""

    kind: str = "synthetic_retrieval"  # data source: synthetic_retrieval
    batch_size: int = 256  # (user, positive item) pairs per batch per rank
    num_workers: int = 0  # DataLoader worker processes
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    num_val_batches: int = 4  # batches of the fixed validation set
    num_users: int = 1000  # users (rows of the user-id table)
    num_items: int = 500  # items (rows of the item-id table)
    num_clusters: int = 25  # hidden interest clusters
    history_length: int = 5  # items in each user's history feature
    seed: int = 1234  # seed of the hidden clusters and of the sample stream

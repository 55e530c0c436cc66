"""Synthetic retrieval pairs for two-tower models: users in hidden interest clusters, items of those clusters.

Each user belongs to a hidden cluster (a hash of the user id); the user's history and the positive
item are drawn from that cluster's items (item ``i`` is in cluster ``i % num_clusters``), with a
little uniform noise. Batch ``i`` depends only on (seed, i), as for ``SyntheticCriteo``.

Example:
    >>> gen = SyntheticRetrieval(SyntheticRetrievalConfig(num_users=20, num_items=10, num_clusters=2), seed=0)
    >>> gen.batch(index=0, batch_size=4).labels.tolist()
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recframe.data.synthetic_hash import U64, mix64, zipf_ids
from recframe.sparse import Batch, KeyedJaggedTensor


@dataclass(frozen=True)
class SyntheticRetrievalConfig:
    """Shape of synthetic (user, positive item) pairs for retrieval models.

    Features: ``user_id``, ``user_history`` (multi-hot item ids), ``item_id``, ``item_category``.

    Args:
        num_users: users (ids in ``[0, num_users)``, Zipf-distributed activity).
        num_items: items; item ``i`` belongs to cluster ``i % num_clusters`` (its category).
        num_clusters: hidden clusters; each user likes one.
        history_length: ids in ``user_history``, drawn from the user's cluster.
        noise: chance that a history item or the positive item is uniform over all items instead.
        zipf_exponent: skew of user activity.
    """

    num_users: int = 1000
    num_items: int = 500
    num_clusters: int = 25
    history_length: int = 5
    noise: float = 0.1
    zipf_exponent: float = 1.0

    def __post_init__(self) -> None:
        if min(self.num_users, self.num_items, self.num_clusters, self.history_length) < 1:
            raise ValueError(f"SyntheticRetrievalConfig: sizes must be >= 1, got {self}")
        if self.num_clusters > self.num_items:
            raise ValueError(f"SyntheticRetrievalConfig: num_clusters ({self.num_clusters}) > num_items "
                             f"({self.num_items}) leaves clusters without items")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"SyntheticRetrievalConfig: noise must be in [0, 1], got {self.noise}")


USER_FEATURES = ("user_id", "user_history")
ITEM_FEATURES = ("item_id", "item_category")


class SyntheticRetrieval:
    """Generator of retrieval batches: sparse user and item features, labels all 1 (positive pairs).

    Args:
        config: sizes.
        seed: fixes the users' clusters and every batch.

    Example:
        >>> gen = SyntheticRetrieval(SyntheticRetrievalConfig(num_users=20, num_items=10, num_clusters=2), seed=0)
        >>> gen.batch(index=0, batch_size=4).sparse_features.keys()
        ['user_id', 'user_history', 'item_id', 'item_category']
    """

    def __init__(self, config: SyntheticRetrievalConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self._cluster_salt = U64(np.random.default_rng([seed, 0xC1]).integers(0, 2**63))

    def user_cluster(self, users: np.ndarray) -> np.ndarray:
        """The hidden cluster of each user."""
        return (mix64(users.astype(U64) ^ self._cluster_salt) % U64(self.config.num_clusters)).astype(np.int64)

    def _items_of(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        count = (c.num_items - clusters + c.num_clusters - 1) // c.num_clusters  # items with id % C == cluster
        items = clusters + c.num_clusters * (rng.random(clusters.shape) * count).astype(np.int64)
        noisy = rng.random(clusters.shape) < c.noise
        return np.where(noisy, rng.integers(0, c.num_items, size=clusters.shape), items)

    def batch(self, index: int, batch_size: int) -> Batch:
        """Batch number ``index``: ``batch_size`` (user, positive item) pairs; ``dense_features`` is ``[B, 0]``."""
        c = self.config
        rng = np.random.default_rng([self.seed, 2, index, batch_size])
        users = zipf_ids(rng.random(batch_size), c.num_users, c.zipf_exponent)
        clusters = self.user_cluster(users)
        history = self._items_of(np.repeat(clusters, c.history_length), rng)
        items = self._items_of(clusters, rng)
        values = np.concatenate([users, history, items, items % c.num_clusters])
        lengths = np.concatenate([
            np.ones(batch_size, np.int64), np.full(batch_size, c.history_length, np.int64),
            np.ones(2 * batch_size, np.int64),
        ])
        kjt = KeyedJaggedTensor.from_lengths(
            list(USER_FEATURES + ITEM_FEATURES), torch.from_numpy(values), torch.from_numpy(lengths),
            stride=batch_size, validate=False,
        )
        return Batch(dense_features=torch.zeros(batch_size, 0), sparse_features=kjt, labels=torch.ones(batch_size))

    def item_catalog(self) -> KeyedJaggedTensor:
        """Every item once, as item features (``stride = num_items``; row ``i`` is item ``i``)."""
        c = self.config
        items = torch.arange(c.num_items)
        return KeyedJaggedTensor.from_lengths(
            list(ITEM_FEATURES), torch.cat([items, items % c.num_clusters]),
            torch.ones(2 * c.num_items, dtype=torch.int64), stride=c.num_items,
        )

"""Synthetic data with a planted signal: Criteo-shaped click batches.

``SyntheticCriteo`` makes batches like Criteo's: ``num_dense_features`` lognormal floats (log1p'd
by default, as the Criteo loader does) and sparse features whose ids follow a Zipf law over each
table's rows (id 0 is the hottest), one or more ids per sample (multi-hot). Labels are drawn from a
hidden model over those same features, so a model can learn them and AUC well above 0.5 is
reachable:

    logit_t = base_logit_t + signal_strength * (dense_weight * sum_j beta_tj z_j / sqrt(n_dense)
              + sparse_weight * sum_f mean_{id in bag f} w_tf(id) / sqrt(F)
              + pairwise_weight * sum_{f<g} <h_tf, h_tg> / sqrt(3 F (F - 1) / 2))

where ``z_j`` is the standard normal behind dense feature ``j``, ``w_tf(id)`` a random weight and
``h_tf`` the bag mean of random 3-dim latent vectors (a factorization-machine pairwise term).
Per-id weights come from a hash of (seed, task, feature, id), so tables of any size cost no memory.
Tasks after the first share ``task_correlation`` of task 0's signal. ``label ~ Bernoulli(sigmoid(logit))``.

``recframe.data.synthetic_dataset.SyntheticDataset`` streams the batches of a generator (this one,
or ``recframe.data.synthetic_retrieval.SyntheticRetrieval``'s retrieval pairs) over ranks and workers;
the hashes and the Zipf law are ``recframe.data.synthetic_hash``'s.

Batch ``i`` depends only on (seed, i): reproducible, whatever the order, the worker or the rank.

Example:
    >>> gen = SyntheticCriteo(SyntheticConfig(num_dense_features=13, table_sizes=(100,) * 26), seed=0)
    >>> batch = gen.batch(index=0, batch_size=8)
    >>> batch.dense_features.shape, batch.sparse_features.stride(), batch.labels.shape
    (torch.Size([8, 13]), 8, torch.Size([8]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recframe.data.synthetic_hash import U64, hash_uniforms, zipf_ids_in
from recframe.sparse import Batch, KeyedJaggedTensor


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape and signal of Criteo-like synthetic data.

    Args:
        num_dense_features: number of dense features (0 allowed).
        table_sizes: rows of the table behind each sparse feature; one entry per feature.
        ids_per_feature: ids per sample for each feature (the bag size; > 1 is multi-hot); an int
            applies to every feature.
        variable_lengths: draw each bag size uniformly in ``[1, ids_per_feature]`` instead.
        empty_bag_probability: chance that a bag has no ids at all.
        zipf_exponent: skew of the id distribution (0 uniform; Criteo is near 1.0-1.2).
        feature_prefix: sparse features are named ``f"{feature_prefix}{i}"``...
        sparse_names: ...unless names are given here, one per table size.
        num_tasks: number of label columns (labels are ``[batch]`` for 1, else ``[batch, num_tasks]``).
        signal_strength: scale of the hidden logit; 0 makes labels independent of the features.
        base_logit: intercept of every task's logit (-1.1 gives about Criteo's 25% positives at
            strength 0).
        dense_weight: weight of the dense (linear) part of the hidden model.
        sparse_weight: weight of the per-id (first-order) part.
        pairwise_weight: weight of the pairwise (FM) part.
        task_correlation: share of task 0's hidden signal in the other tasks' (in [0, 1]).
        dense_log1p: return ``log1p`` of the lognormal dense values (what the Criteo loader feeds models).
    """

    num_dense_features: int = 13
    table_sizes: tuple[int, ...] = (1000,) * 26
    ids_per_feature: int | tuple[int, ...] = 1
    variable_lengths: bool = False
    empty_bag_probability: float = 0.0
    zipf_exponent: float = 1.05
    feature_prefix: str = "cat_"
    sparse_names: tuple[str, ...] | None = None
    num_tasks: int = 1
    signal_strength: float = 2.0
    base_logit: float = -1.1
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    pairwise_weight: float = 1.0
    task_correlation: float = 0.5
    dense_log1p: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.num_dense_features < 0:
            problems.append(f"num_dense_features must be >= 0, got {self.num_dense_features}")
        if any(int(n) < 1 for n in self.table_sizes):
            problems.append(f"table_sizes must all be >= 1, got {self.table_sizes}")
        if any(n < 1 for n in self.bag_sizes()):
            problems.append(f"ids_per_feature must be >= 1, got {self.ids_per_feature}")
        if not 0.0 <= self.empty_bag_probability <= 1.0:
            problems.append(f"empty_bag_probability must be in [0, 1], got {self.empty_bag_probability}")
        if self.zipf_exponent < 0:
            problems.append(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if self.sparse_names is not None and len(self.sparse_names) != len(self.table_sizes):
            problems.append(f"sparse_names has {len(self.sparse_names)} names for {len(self.table_sizes)} tables")
        if self.num_tasks < 1:
            problems.append(f"num_tasks must be >= 1, got {self.num_tasks}")
        if not 0.0 <= self.task_correlation <= 1.0:
            problems.append(f"task_correlation must be in [0, 1], got {self.task_correlation}")
        if problems:
            raise ValueError("SyntheticConfig: " + "; ".join(problems))

    @property
    def num_sparse_features(self) -> int:
        return len(self.table_sizes)

    def feature_names(self) -> list[str]:
        """Names of the sparse features, in KJT key order."""
        if self.sparse_names is not None:
            return list(self.sparse_names)
        return [f"{self.feature_prefix}{i}" for i in range(self.num_sparse_features)]

    def bag_sizes(self) -> tuple[int, ...]:
        """``ids_per_feature`` as one (maximum) bag size per feature."""
        if isinstance(self.ids_per_feature, int):
            return (self.ids_per_feature,) * self.num_sparse_features
        if len(self.ids_per_feature) != self.num_sparse_features:
            raise ValueError(f"SyntheticConfig: ids_per_feature has {len(self.ids_per_feature)} entries "
                             f"for {self.num_sparse_features} sparse features")
        return tuple(int(n) for n in self.ids_per_feature)


@dataclass(frozen=True)
class _Features:
    """Some sparse features: their indices (ascending) and how to index ``[F, ...]`` arrays with them.

    Args:
        ids: the features' indices, ascending, ``[g]``.
        index: a slice for a run of consecutive features (indexing gives views), else ``ids``.
    """

    ids: np.ndarray
    index: slice | np.ndarray


def _features(ids: np.ndarray) -> _Features:
    """``_Features`` of the ascending indices ``ids`` (at least one)."""
    run = ids.size > 0 and int(ids[-1]) - int(ids[0]) + 1 == ids.size
    return _Features(ids, slice(int(ids[0]), int(ids[-1]) + 1) if run else ids)


@dataclass(frozen=True)
class _Bags:
    """Bags of some sparse features, padded to one size ``n``.

    Args:
        features: which features.
        ids: ``[g, B, n]``; position ``k`` of a bag counts when ``k < lengths``.
        lengths: bag sizes ``[g, B]`` (at most ``n``).
    """

    features: _Features
    ids: np.ndarray
    lengths: np.ndarray


class SyntheticCriteo:
    """Generator of Criteo-shaped ``Batch``es with labels from a hidden model (see the module docstring).

    Args:
        config: shapes and signal.
        seed: fixes the hidden model and every batch.

    Example:
        >>> gen = SyntheticCriteo(SyntheticConfig(table_sizes=(50, 50), num_tasks=2), seed=1)
        >>> b = gen.batch(index=3, batch_size=4)
        >>> b.labels.shape, gen.hidden_logits(b).shape
        (torch.Size([4, 2]), torch.Size([4, 2]))
    """

    def __init__(self, config: SyntheticConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        c = config
        rng = np.random.default_rng([seed, 0x5EED])
        self._table_sizes = np.asarray(c.table_sizes, dtype=np.int64)
        self._bag_sizes = np.asarray(c.bag_sizes(), dtype=np.int64)
        # float32 uniforms resolve every id of tables under 2**24 rows; larger tables need float64
        self._uniform_dtype = np.float32 if int(self._table_sizes.max(initial=1)) < 2**24 else np.float64
        self._dense_mu = rng.uniform(-0.5, 1.5, size=c.num_dense_features)
        self._dense_sigma = rng.uniform(0.5, 1.2, size=c.num_dense_features)
        self._beta = rng.standard_normal((c.num_tasks, c.num_dense_features))
        self._salts = rng.integers(0, 2**63, size=(c.num_tasks, c.num_sparse_features), dtype=np.int64).astype(U64)
        # the features of each bag size: ids and hashes are computed a group at a time
        self._bag_groups = [_features(np.flatnonzero(self._bag_sizes == n)) for n in np.unique(self._bag_sizes)]

    @property
    def feature_names(self) -> list[str]:
        return self.config.feature_names()

    # ---- the hidden model -------------------------------------------------------------------------
    def _bag_means(self, task: int, bags: _Bags) -> np.ndarray:
        """Task ``task``'s four hash uniforms averaged over each bag of ``bags``: ``[g, B, 4]`` float32.

        Summed position by position from the first, then divided by the bag size (by 1 for an empty
        bag): the float32 numbers of the padded generator, whose extra terms were zeros (``x + 0 == x``)
        and which divided full bags of size 1 by 1 (exact) or not at all.
        """
        num_g, batch, bag = bags.ids.shape
        if bag == 0:
            return np.zeros((num_g, batch, 4), np.float32)
        u = hash_uniforms(bags.ids, self._salts[task][bags.features.index][:, None, None])  # [g, B, n, 4]
        full = bool((bags.lengths == bag).all())
        if not full:
            u *= (np.arange(bag) < bags.lengths[:, :, None])[..., None].astype(np.float32)
        means = u[:, :, 0].copy()
        for k in range(1, bag):  # a loop beats ndarray.sum over a middle axis
            means += u[:, :, k]
        if bag > 1 or not full:
            means /= np.maximum(bags.lengths, 1)[..., None].astype(np.float32)
        return means

    def _logits(self, z: np.ndarray, groups: list[_Bags], batch: int) -> np.ndarray:
        """Hidden logits ``[B, T]``.

        Args:
            z: the standard normals behind the dense features, ``[B, n_dense]``.
            groups: every sparse feature's bags, once, in groups of features padded to one size.
            batch: the batch size ``B``.
        """
        c = self.config
        num_f = c.num_sparse_features
        out = np.empty((batch, c.num_tasks), dtype=np.float64)
        for t in range(c.num_tasks):
            if len(groups) == 1:  # every feature, in order
                means = self._bag_means(t, groups[0])
            else:
                means = np.empty((num_f, batch, 4), np.float32)
                for bags in groups:
                    means[bags.features.index] = self._bag_means(t, bags)
            # column 0: first-order weight; columns 1-3: the latent vector of the pairwise term
            total = means.sum(axis=0)  # [B, 4]
            squares = (means * means).sum(axis=0)  # [B, 4]
            first = total[:, 0] / math.sqrt(max(num_f, 1))
            pairs = 0.5 * ((total[:, 1:] * total[:, 1:]).sum(-1) - squares[:, 1:].sum(-1))
            pairs = pairs / math.sqrt(max(3 * num_f * (num_f - 1) / 2, 1))
            dense = z @ self._beta[t] / math.sqrt(max(c.num_dense_features, 1)) if c.num_dense_features else 0.0
            out[:, t] = c.dense_weight * dense + c.sparse_weight * first + c.pairwise_weight * pairs
        if c.num_tasks > 1:
            rho = c.task_correlation
            out[:, 1:] = math.sqrt(rho) * out[:, :1] + math.sqrt(1.0 - rho) * out[:, 1:]
        return c.base_logit + c.signal_strength * out

    def hidden_logits(self, batch: Batch) -> torch.Tensor:
        """The hidden model's logits for a batch this generator made: ``[B]`` or ``[B, num_tasks]``."""
        c = self.config
        kjt = batch.sparse_features
        if kjt.keys() != self.feature_names:
            raise ValueError(f"hidden_logits: batch keys {kjt.keys()} are not this generator's {self.feature_names}")
        dense = batch.dense_features.double().numpy()
        raw = np.expm1(dense) if c.dense_log1p else dense
        z = (np.log(np.maximum(raw, 1e-300)) - self._dense_mu) / self._dense_sigma
        num_f, batch_size = c.num_sparse_features, kjt.stride()
        lengths = kjt.lengths().numpy().astype(np.int64).reshape(num_f, batch_size)
        per_key = lengths.sum(axis=1)
        bounds = np.concatenate([[0], np.cumsum(per_key)])
        values = kjt.values().numpy()
        longest = lengths.max(axis=1, initial=0)
        groups = []
        for bag in np.unique(longest):  # features padded to the longest bag among them in this batch
            features = np.flatnonzero(longest == bag)
            ids = np.zeros((features.size, batch_size, int(bag)), dtype=np.int64)
            ids[np.arange(bag) < lengths[features][:, :, None]] = np.concatenate(
                [values[bounds[f]:bounds[f + 1]] for f in features])
            groups.append(_Bags(_features(features), ids, lengths[features]))
        logits = torch.from_numpy(self._logits(z, groups, batch_size))
        return logits.squeeze(1) if c.num_tasks == 1 else logits

    # ---- batches ------------------------------------------------------------------------------------
    def batch(self, index: int, batch_size: int) -> Batch:
        """Batch number ``index`` (a pure function of seed, index and batch size).

        Args:
            index: the batch number (any int >= 0).
            batch_size: samples in the batch.
        """
        return self.batch_and_logits(index, batch_size)[0]

    def batch_and_logits(self, index: int, batch_size: int) -> tuple[Batch, torch.Tensor]:
        """Batch number ``index`` and the hidden logits ``[B, T]`` (float64) its labels were drawn from.

        The uniforms behind the ids are drawn ``[F, B, max_bag]`` (one stream for every bag-size
        mix), but ids and hashes are computed only on each feature's own ``bag_size`` slots: features
        of one bag size at a time (``[g, B, n]``), 214 ids a sample at MLPerf's bags, not 2,600.

        Args:
            index: the batch number (any int >= 0).
            batch_size: samples in the batch.
        """
        c = self.config
        rng = np.random.default_rng([self.seed, 1, index, batch_size])
        num_f, b = c.num_sparse_features, batch_size
        z = rng.standard_normal((b, c.num_dense_features))
        raw = np.exp(z * self._dense_sigma + self._dense_mu)
        dense = np.log1p(raw) if c.dense_log1p else raw

        max_bag = int(self._bag_sizes.max()) if num_f else 0
        u = rng.random((num_f, b, max_bag), dtype=self._uniform_dtype)
        if c.variable_lengths:
            lengths = rng.integers(1, self._bag_sizes[:, None] + 1, size=(num_f, b))
        else:
            lengths = np.broadcast_to(self._bag_sizes[:, None], (num_f, b)).copy()
        if c.empty_bag_probability > 0.0:
            lengths[rng.random((num_f, b)) < c.empty_bag_probability] = 0
        fixed = not c.variable_lengths and c.empty_bag_probability == 0.0

        groups, pieces = [], [np.empty(0, np.int64)] * num_f
        as_drawn = fixed and len(self._bag_groups) == 1  # every feature, in order: the ids are the values
        for features in self._bag_groups:
            bag = int(self._bag_sizes[features.index][0])
            # a copy of the group's slots (a view for a run of features with bag == max_bag)
            slots = np.ascontiguousarray(u[features.index, :, :bag])
            ids = zipf_ids_in(slots, self._table_sizes[features.index][:, None, None], c.zipf_exponent,
                               self._uniform_dtype)
            bags = _Bags(features, ids, lengths[features.index])
            groups.append(bags)
            if as_drawn:
                continue
            keep = None if fixed else np.arange(bag) < bags.lengths[:, :, None]
            for i, f in enumerate(features.ids):
                pieces[f] = ids[i].reshape(-1) if keep is None else ids[i][keep[i]]
        if as_drawn:
            values = groups[0].ids.reshape(-1)
        else:
            values = np.concatenate(pieces) if num_f else np.empty(0, np.int64)

        logits = self._logits(z, groups, b)
        labels = (rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        kjt = KeyedJaggedTensor.from_lengths(
            self.feature_names,
            torch.from_numpy(values),
            torch.from_numpy(lengths.reshape(-1)),
            stride=b,
            validate=False,
        )
        label_tensor = torch.from_numpy(labels)
        batch = Batch(
            dense_features=torch.from_numpy(dense.astype(np.float32)),
            sparse_features=kjt,
            labels=label_tensor.squeeze(1) if c.num_tasks == 1 else label_tensor,
        )
        return batch, torch.from_numpy(logits)

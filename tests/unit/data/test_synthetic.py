"""Synthetic data: reproducibility, shapes, Zipf skew, and a planted signal that is learnable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from recframe.data.multihot import MLPERF_BAG_SIZES, MLPERF_NUM_EMBEDDINGS
from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_dataset import SyntheticDataset
from recframe.data.synthetic_hash import hash_uniforms, zipf_ids
from recframe.data.synthetic_retrieval import SyntheticRetrieval, SyntheticRetrievalConfig
from recframe.sparse import Batch, KeyedJaggedTensor


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted as one half."""
    s = scores.double().flatten()
    y = labels.flatten() > 0.5
    order = torch.argsort(s)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    mean_rank = first + (counts - 1) / 2.0
    ranks[order] = mean_rank[inverse].double()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auc_helper_on_known_cases() -> None:
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert auc(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([0, 1, 0, 1])) == 0.5
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75


def _assert_same(a: Batch, b: Batch) -> None:
    assert torch.equal(a.dense_features, b.dense_features)
    assert torch.equal(a.labels, b.labels)
    assert a.sparse_features.keys() == b.sparse_features.keys()
    assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
    assert torch.equal(a.sparse_features.lengths(), b.sparse_features.lengths())


def test_batches_are_reproducible_and_distinct() -> None:
    config = SyntheticConfig(table_sizes=(100, 1000, 50), ids_per_feature=(1, 3, 2), variable_lengths=True)
    a, b = SyntheticCriteo(config, seed=7), SyntheticCriteo(config, seed=7)
    _assert_same(a.batch(3, 64), b.batch(3, 64))
    _assert_same(a.batch(3, 64), a.batch(3, 64))  # no hidden state advances between calls
    other_index, other_seed = a.batch(4, 64), SyntheticCriteo(config, seed=8).batch(3, 64)
    assert not torch.equal(a.batch(3, 64).dense_features, other_index.dense_features)
    assert not torch.equal(a.batch(3, 64).sparse_features.values(), other_seed.sparse_features.values())


@pytest.mark.parametrize("num_tasks", [1, 3])
def test_shapes_dtypes_and_ranges(num_tasks: int) -> None:
    sizes = (10, 100, 1000, 7)
    config = SyntheticConfig(num_dense_features=5, table_sizes=sizes, ids_per_feature=(1, 2, 4, 3),
                             num_tasks=num_tasks)
    batch = SyntheticCriteo(config, seed=0).batch(0, 33)
    assert batch.dense_features.shape == (33, 5) and batch.dense_features.dtype == torch.float32
    assert bool((batch.dense_features > 0).all())  # log1p of lognormal values
    assert batch.labels.shape == ((33,) if num_tasks == 1 else (33, num_tasks))
    assert batch.labels.dtype == torch.float32
    assert set(batch.labels.unique().tolist()) <= {0.0, 1.0}
    kjt = batch.sparse_features
    assert kjt.keys() == ["cat_0", "cat_1", "cat_2", "cat_3"] and kjt.stride() == 33
    assert kjt.values().dtype == torch.int64
    assert kjt.length_per_key() == [33 * 1, 33 * 2, 33 * 4, 33 * 3]
    for key, size in zip(kjt.keys(), sizes, strict=True):
        ids = kjt[key].values()
        assert int(ids.min()) >= 0 and int(ids.max()) < size
    # the structure passes the KJT's own validation
    KeyedJaggedTensor.from_lengths(kjt.keys(), kjt.values(), kjt.lengths(), stride=33, validate=True)


def test_variable_lengths_and_empty_bags() -> None:
    config = SyntheticConfig(table_sizes=(50, 50), ids_per_feature=(4, 1), variable_lengths=True,
                             empty_bag_probability=0.25)
    kjt = SyntheticCriteo(config, seed=1).batch(0, 4000).sparse_features
    lengths = kjt.lengths().view(2, 4000)
    assert int(lengths.max()) == 4 and set(lengths[1].tolist()) == {0, 1}
    empty = (lengths == 0).double().mean().item()
    assert abs(empty - 0.25) < 0.03
    nonempty = lengths[0][lengths[0] > 0].double()
    assert abs(nonempty.mean().item() - 2.5) < 0.1  # uniform on 1..4


def test_batch_size_one_and_no_features() -> None:
    one = SyntheticCriteo(SyntheticConfig(table_sizes=(10,)), seed=0).batch(0, 1)
    assert one.dense_features.shape == (1, 13) and one.labels.shape == (1,)
    bare = SyntheticCriteo(SyntheticConfig(num_dense_features=0, table_sizes=()), seed=0).batch(0, 8)
    assert bare.dense_features.shape == (8, 0) and bare.sparse_features.keys() == []


def test_zipf_ids_follow_the_power_law() -> None:
    rng = np.random.default_rng(0)
    rows, s = 1000, 1.2
    ids = zipf_ids(rng.random(400_000), rows, s)
    assert ids.min() >= 0 and ids.max() < rows
    counts = np.bincount(ids, minlength=rows)
    # P(id = 0) of the continuous law on [1, rows + 1), floored
    norm = (1 - (rows + 1) ** (1 - s)) / (s - 1)
    p0 = (1 - 2 ** (1 - s)) / (s - 1) / norm
    assert abs(counts[0] / ids.size - p0) < 0.005
    # log-log slope of frequency against rank over ranks 10..200 is about -s
    k = np.arange(10, 200)
    slope = np.polyfit(np.log(k + 1.0), np.log(counts[k]), 1)[0]
    assert abs(slope + s) < 0.1
    # the hottest 1% of ids get far more than 1% of the lookups
    assert counts[: rows // 100].sum() / ids.size > 0.4
    # exponent 0 is uniform
    flat = np.bincount(zipf_ids(rng.random(200_000), 100, 0.0), minlength=100)
    assert flat.min() > 1700 and flat.max() < 2300
    # tables beyond float32 precision still reach odd ids near the top
    big = zipf_ids(np.array([0.999999999]), 2**25, 0.0)
    assert 2**25 - 64 < int(big[0]) < 2**25


def test_generator_batches_are_skewed() -> None:
    config = SyntheticConfig(table_sizes=(10_000,), zipf_exponent=1.1)
    ids = SyntheticCriteo(config, seed=0).batch(0, 20_000).sparse_features.values()
    counts = torch.bincount(ids, minlength=10_000)
    assert counts[:100].sum().item() / ids.numel() > 0.5  # top 1% of rows take most lookups
    assert (counts > 0).sum().item() > 1000  # and the tail is still visited


def test_planted_signal_is_learnable_and_labels_come_from_it() -> None:
    gen = SyntheticCriteo(SyntheticConfig(), seed=0)
    batches = [gen.batch(i, 2048) for i in range(4)]
    logits = torch.cat([gen.hidden_logits(b) for b in batches])
    labels = torch.cat([b.labels for b in batches])
    assert auc(logits, labels) > 0.85  # the hidden model itself separates the classes well
    # labels are Bernoulli(sigmoid(hidden logit)): calibrated in every decile of the logit
    order = torch.argsort(logits)
    for chunk in order.chunk(10):
        predicted = torch.sigmoid(logits[chunk]).mean().item()
        observed = labels[chunk].mean().item()
        assert abs(predicted - observed) < 0.05


def test_zero_strength_gives_no_signal() -> None:
    gen = SyntheticCriteo(SyntheticConfig(signal_strength=0.0), seed=0)
    batch = gen.batch(0, 8192)
    score = batch.dense_features.sum(1) + batch.sparse_features.values().view(26, -1).double().sum(0)
    assert abs(auc(score, batch.labels) - 0.5) < 0.03
    assert abs(batch.labels.mean().item() - 1 / (1 + math.exp(1.1))) < 0.02


def test_each_part_of_the_hidden_model_matters() -> None:
    """Turning off one part of the hidden model changes the logits (each part is wired in)."""
    base = SyntheticConfig(table_sizes=(100,) * 4, num_dense_features=3)
    batch = SyntheticCriteo(base, seed=0).batch(0, 256)
    full = SyntheticCriteo(base, seed=0).hidden_logits(batch)
    for part in ("dense_weight", "sparse_weight", "pairwise_weight"):
        from dataclasses import replace

        reduced = SyntheticCriteo(replace(base, **{part: 0.0}), seed=0).hidden_logits(batch)
        assert (full - reduced).abs().mean() > 0.05, part


def test_multi_task_labels_are_correlated_and_learnable() -> None:
    gen = SyntheticCriteo(SyntheticConfig(num_tasks=2, task_correlation=0.5), seed=3)
    batch = gen.batch(0, 8192)
    logits = gen.hidden_logits(batch)
    assert logits.shape == (8192, 2)
    corr = torch.corrcoef(logits.T)[0, 1].item()
    assert 0.4 < corr < 0.9
    for t in range(2):
        assert auc(logits[:, t], batch.labels[:, t]) > 0.8
    # with no shared signal the tasks are only as alike as two random hidden models happen to be
    independent = SyntheticCriteo(SyntheticConfig(num_tasks=2, task_correlation=0.0), seed=3)
    corr0 = torch.corrcoef(independent.hidden_logits(batch).T)[0, 1].item()
    assert abs(corr0) < 0.4 and corr > corr0 + 0.2


def test_hidden_logits_rejects_foreign_batches() -> None:
    gen = SyntheticCriteo(SyntheticConfig(table_sizes=(10, 10)), seed=0)
    other = SyntheticCriteo(SyntheticConfig(table_sizes=(10,)), seed=0).batch(0, 4)
    with pytest.raises(ValueError, match="keys"):
        gen.hidden_logits(other)


def test_config_validation_lists_problems() -> None:
    with pytest.raises(ValueError, match="table_sizes.*num_tasks"):
        SyntheticConfig(table_sizes=(0,), num_tasks=0)
    with pytest.raises(ValueError, match="ids_per_feature has 1 entries"):
        SyntheticConfig(table_sizes=(5, 5), ids_per_feature=(1,))


def test_dataset_splits_batches_over_ranks_and_workers() -> None:
    gen = SyntheticCriteo(SyntheticConfig(table_sizes=(20, 20)), seed=0)
    expected = [gen.batch(i, 8) for i in range(6)]
    rank0 = list(SyntheticDataset(gen, batch_size=8, num_batches=3, rank=0, world_size=2))
    rank1 = list(SyntheticDataset(gen, batch_size=8, num_batches=3, rank=1, world_size=2))
    for got, want in zip(rank0 + rank1, expected[0::2] + expected[1::2], strict=True):
        _assert_same(got, want)
    # two DataLoader workers together yield exactly this rank's batches
    loader = DataLoader(SyntheticDataset(gen, batch_size=8, num_batches=5), batch_size=None, num_workers=2)
    got = sorted(loader, key=lambda b: b.dense_features[0, 0].item())
    want = sorted(expected[:5], key=lambda b: b.dense_features[0, 0].item())
    for g, w in zip(got, want, strict=True):
        _assert_same(g, w)
    assert len(SyntheticDataset(gen, batch_size=8, num_batches=5)) == 5
    endless = iter(SyntheticDataset(gen, batch_size=8))
    assert all(next(endless).batch_size == 8 for _ in range(10))


def test_retrieval_pairs_follow_the_hidden_clusters() -> None:
    config = SyntheticRetrievalConfig(num_users=500, num_items=200, num_clusters=10, history_length=4, noise=0.1)
    gen = SyntheticRetrieval(config, seed=0)
    batch = gen.batch(0, 4000)
    kjt = batch.sparse_features
    assert kjt.keys() == ["user_id", "user_history", "item_id", "item_category"]
    assert kjt.length_per_key() == [4000, 16000, 4000, 4000]
    users, items = kjt["user_id"].values().numpy(), kjt["item_id"].values().numpy()
    assert items.max() < 200 and users.max() < 500
    assert np.array_equal(kjt["item_category"].values().numpy(), items % 10)
    same_cluster = (items % 10 == gen.user_cluster(users)).mean()
    assert abs(same_cluster - (0.9 + 0.1 / 10)) < 0.03
    history = kjt["user_history"].values().numpy().reshape(4000, 4)
    assert ((history % 10) == gen.user_cluster(users)[:, None]).mean() > 0.85
    _assert_same(batch, SyntheticRetrieval(config, seed=0).batch(0, 4000))
    catalog = gen.item_catalog()
    assert catalog.stride() == 200 and torch.equal(catalog["item_id"].values(), torch.arange(200))


# ---- the multi-hot generator against the padded one it replaced (issue 14) -------------------------
def _reference_logits(gen: SyntheticCriteo, z: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The hidden model as first written: hashes and bag sums over padded ids ``[F, B, max_bag]``."""
    c = gen.config
    num_f, batch, max_bag = ids.shape
    full = bool((lengths == max_bag).all())
    mask = None if full else (np.arange(max_bag) < lengths[:, :, None])[..., None].astype(np.float32)
    denom = np.float32(max_bag) if full else np.maximum(lengths, 1)[..., None].astype(np.float32)
    out = np.empty((batch, c.num_tasks), dtype=np.float64)
    for t in range(c.num_tasks):
        u = hash_uniforms(ids, gen._salts[t][:, None, None])
        if mask is not None:
            u *= mask
        means = u[:, :, 0].copy() if max_bag else np.zeros((num_f, batch, 4), np.float32)
        for k in range(1, max_bag):
            means += u[:, :, k]
        if max_bag > 1 or mask is not None:
            means /= denom
        total = means.sum(axis=0)
        squares = (means * means).sum(axis=0)
        first = total[:, 0] / math.sqrt(max(num_f, 1))
        pairs = 0.5 * ((total[:, 1:] * total[:, 1:]).sum(-1) - squares[:, 1:].sum(-1))
        pairs = pairs / math.sqrt(max(3 * num_f * (num_f - 1) / 2, 1))
        dense = z @ gen._beta[t] / math.sqrt(max(c.num_dense_features, 1)) if c.num_dense_features else 0.0
        out[:, t] = c.dense_weight * dense + c.sparse_weight * first + c.pairwise_weight * pairs
    if c.num_tasks > 1:
        rho = c.task_correlation
        out[:, 1:] = math.sqrt(rho) * out[:, :1] + math.sqrt(1.0 - rho) * out[:, 1:]
    return c.base_logit + c.signal_strength * out


def _reference_batch(gen: SyntheticCriteo, index: int, batch_size: int) -> tuple[Batch, torch.Tensor]:
    """``SyntheticCriteo.batch`` as first written (every draw and hash on ``[F, B, max_bag]``), logits ``[B, T]``."""
    c = gen.config
    rng = np.random.default_rng([gen.seed, 1, index, batch_size])
    num_f, b = c.num_sparse_features, batch_size
    z = rng.standard_normal((b, c.num_dense_features))
    raw = np.exp(z * gen._dense_sigma + gen._dense_mu)
    dense = np.log1p(raw) if c.dense_log1p else raw
    max_bag = int(gen._bag_sizes.max()) if num_f else 0
    u = rng.random((num_f, b, max_bag), dtype=gen._uniform_dtype)
    ids = zipf_ids(u, gen._table_sizes[:, None, None], c.zipf_exponent)
    uniform_bags = bool((gen._bag_sizes == max_bag).all())
    if c.variable_lengths:
        lengths = rng.integers(1, gen._bag_sizes[:, None] + 1, size=(num_f, b))
    else:
        lengths = np.broadcast_to(gen._bag_sizes[:, None], (num_f, b)).copy()
    if c.empty_bag_probability > 0.0:
        lengths[rng.random((num_f, b)) < c.empty_bag_probability] = 0
    if uniform_bags and not c.variable_lengths and c.empty_bag_probability == 0.0:
        values = ids.reshape(-1)
    else:
        values = ids[np.arange(max_bag) < lengths[:, :, None]]
    logits = _reference_logits(gen, z, ids, lengths)
    labels = (rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    kjt = KeyedJaggedTensor.from_lengths(gen.feature_names, torch.from_numpy(values),
                                         torch.from_numpy(lengths.reshape(-1)), stride=b, validate=False)
    label_tensor = torch.from_numpy(labels)
    batch = Batch(dense_features=torch.from_numpy(dense.astype(np.float32)), sparse_features=kjt,
                  labels=label_tensor.squeeze(1) if c.num_tasks == 1 else label_tensor)
    return batch, torch.from_numpy(logits)


def _reference_hidden_logits(gen: SyntheticCriteo, batch: Batch) -> torch.Tensor:
    """``SyntheticCriteo.hidden_logits`` as first written: the KJT back to padded ids ``[F, B, max_bag]``."""
    c = gen.config
    kjt = batch.sparse_features
    dense = batch.dense_features.double().numpy()
    raw = np.expm1(dense) if c.dense_log1p else dense
    z = (np.log(np.maximum(raw, 1e-300)) - gen._dense_mu) / gen._dense_sigma
    num_f, batch_size = c.num_sparse_features, kjt.stride()
    lengths = kjt.lengths().numpy().astype(np.int64).reshape(num_f, batch_size)
    flat = lengths.reshape(-1)
    max_bag = int(flat.max(initial=0))
    ids = np.zeros((num_f * batch_size, max_bag), dtype=np.int64)
    segment = np.repeat(np.arange(flat.size), flat)
    starts = np.cumsum(flat) - flat
    ids[segment, np.arange(segment.size) - starts[segment]] = kjt.values().numpy()
    logits = torch.from_numpy(_reference_logits(gen, z, ids.reshape(num_f, batch_size, max_bag), lengths))
    return logits.squeeze(1) if c.num_tasks == 1 else logits


EQUIVALENCE_CONFIGS = {
    "mlperf_bags": SyntheticConfig(table_sizes=MLPERF_NUM_EMBEDDINGS, ids_per_feature=MLPERF_BAG_SIZES),
    "mlperf_bags_4m_uniform": SyntheticConfig(table_sizes=(4_000_000,) * 26, ids_per_feature=MLPERF_BAG_SIZES,
                                              zipf_exponent=0.0),
    "variable_and_empty_3_tasks": SyntheticConfig(
        num_dense_features=4, table_sizes=(50, 7, 1000, 3, 2**25, 20), ids_per_feature=(4, 1, 7, 2, 4, 1),
        variable_lengths=True, empty_bag_probability=0.3, num_tasks=3, zipf_exponent=1.0),
    "empty_bags_fixed_sizes": SyntheticConfig(table_sizes=(30, 40, 50), ids_per_feature=(3, 1, 5),
                                              empty_bag_probability=0.5, num_tasks=2, zipf_exponent=0.5),
    "all_bags_empty": SyntheticConfig(num_dense_features=0, table_sizes=(9, 9), ids_per_feature=(2, 3),
                                      empty_bag_probability=1.0),
    "one_hot": SyntheticConfig(table_sizes=(100_000,) * 26),
    "uniform_multi_hot": SyntheticConfig(table_sizes=(100, 200, 300), ids_per_feature=3, num_tasks=3),
    "variable_one_size": SyntheticConfig(table_sizes=(100, 200), ids_per_feature=(5, 5), variable_lengths=True),
    "no_sparse": SyntheticConfig(table_sizes=(), num_tasks=2),
}


@pytest.mark.parametrize("name", list(EQUIVALENCE_CONFIGS))
def test_grouped_generator_is_bit_identical_to_the_padded_one(name: str) -> None:
    """Batches, labels and hidden logits are the numbers the padded generator made (seed, index, size)."""
    config = EQUIVALENCE_CONFIGS[name]
    gen = SyntheticCriteo(config, seed=11)
    for index, batch_size in ((0, 64), (5, 33), (2, 1)):
        got, got_logits = gen.batch_and_logits(index, batch_size)
        want, want_logits = _reference_batch(gen, index, batch_size)
        _assert_same(got, want)
        _assert_same(gen.batch(index, batch_size), want)
        assert got.labels.shape == want.labels.shape and got.sparse_features.stride() == batch_size
        assert got_logits.shape == (batch_size, config.num_tasks) and got_logits.dtype == torch.float64
        assert torch.equal(got_logits, want_logits)  # the labels' own logits, from the exact normals
        # from the batch alone (dense values rounded to float32): the padded model's logits too
        assert torch.equal(gen.hidden_logits(got), _reference_hidden_logits(gen, got))


def test_hidden_logits_of_batches_with_other_bag_sizes() -> None:
    """A batch whose bags are longer or shorter than the generator's own gets the padded model's logits."""
    keys = dict(table_sizes=(60, 70, 80), num_tasks=2)
    gen = SyntheticCriteo(SyntheticConfig(ids_per_feature=(1, 2, 3), **keys), seed=4)
    for ids_per_feature in ((6, 1, 2), (1, 2, 3)):
        other = SyntheticCriteo(SyntheticConfig(ids_per_feature=ids_per_feature, variable_lengths=True,
                                                empty_bag_probability=0.2, **keys), seed=5)
        batch = other.batch(1, 40)
        assert torch.equal(gen.hidden_logits(batch), _reference_hidden_logits(gen, batch))

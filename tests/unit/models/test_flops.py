"""Dense FLOPs and parameter counts: hand counts, and a cross-check against torch's FlopCounterMode.

Convention (recframe.models.flops): a multiply-add is 2 FLOPs, a bias add or any other elementwise
add/multiply is 1; activations, normalization, lookups and the loss are not counted.
FlopCounterMode counts only matrix products (2 * M * N * K), so the helper minus its bias adds and
elementwise terms must equal FlopCounterMode's count per sample (bmm's full Gram matrix aside).
"""

from __future__ import annotations

from unittest import mock

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from recframe.embedding import TableConfig
from recframe.models import DLRM, DLRM_DCN, CrossNet, DeepFM, FMInteraction, Task, TwoTower, WideDeep, linear
from recframe.models.flops import cross_net_flops, dense_parameter_count, fm_flops
from recframe.sparse import Batch, KeyedJaggedTensor

from .helpers import ebc, wide_ebc


def _tables(dims: list[int], prefix: str = "f") -> list[TableConfig]:
    return [TableConfig(name=f"t_{prefix}{i}", num_embeddings=4, embedding_dim=d, feature_names=[f"{prefix}{i}"])
            for i, d in enumerate(dims)]


def _batch(features: list[str], batch: int, dense: int) -> Batch:
    n = len(features) * batch
    kjt = KeyedJaggedTensor.from_lengths(features, torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64))
    return Batch(torch.rand(batch, dense), kjt, torch.zeros(batch))


def _matmul_flops_per_sample(model: nn.Module, batch: Batch) -> float:
    """FlopCounterMode's count per sample, the towers on torch's own linear (it does not count oneDNN's)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, mock.patch.object(linear, "onednn_applies", lambda x, weight: False):
        model(batch)
    return counter.get_total_flops() / batch.batch_size


def test_mlperf_dlrm_dcnv2_dense_flops_per_sample() -> None:
    """MLPerf DLRM-DCNv2: 13 dense, 26 tables of dim 128, bottom 512-256-128, 3 cross layers of
    low rank 512, top 1024-1024-512-256-1."""
    model = DLRM_DCN(ebc(_tables([128] * 26)), num_dense_features=13, dense_layer_sizes=[512, 256, 128],
                     over_layer_sizes=[1024, 1024, 512, 256], num_cross_layers=3, low_rank=512)
    # Hand count. Linear(n, m) = 2*n*m (multiply-adds) + m (bias adds).
    bottom = (2 * 13 * 512 + 512) + (2 * 512 * 256 + 256) + (2 * 256 * 128 + 128)
    d, r = 27 * 128, 512  # cross-net width: the dense embedding and 26 pooled embeddings, 3456
    # per cross layer: V x (2dr, no bias) + U(.) (2rd) + its bias (d) + x0 * (.) (d) + residual (d)
    cross = 3 * (2 * d * r + 2 * r * d + d + d + d)
    top = ((2 * 3456 * 1024 + 1024) + (2 * 1024 * 1024 + 1024) + (2 * 1024 * 512 + 512)
           + (2 * 512 * 256 + 256) + (2 * 256 * 1 + 1))
    assert (bottom, cross, top) == (341_888, 21_264_768, 10_489_089)
    assert bottom + cross + top == 32_095_745
    assert model.dense_flops_per_sample() == 32_095_745
    # Parameters: weights and biases of the same layers.
    params = ((13 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128)
              + 3 * (d * r + r * d + d)
              + (3456 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256) + (256 + 1))
    assert model.dense_parameter_count() == params == 16_044_545
    # Independent check of the matrix products with torch's counter.
    biases = (512 + 256 + 128) + 3 * d + (1024 + 1024 + 512 + 256 + 1)
    elementwise = 3 * 2 * d
    matmuls = _matmul_flops_per_sample(model, _batch(model.feature_names, 2, 13))
    assert matmuls == 32_095_745 - biases - elementwise


def test_dlrm_small_hand_count_and_counter() -> None:
    model = DLRM(ebc(_tables([4, 4, 4])), num_dense_features=3, dense_layer_sizes=[8, 4], over_layer_sizes=[6])
    bottom = (2 * 3 * 8 + 8) + (2 * 8 * 4 + 4)
    dots = 6 * (2 * 4)  # 4 vectors -> 6 pairs, each a 4-dim dot product
    top = 2 * (4 + 6) * 6 + 6  # input: dense embedding (4) + 6 dot products
    head = 2 * 6 * 1 + 1
    assert model.dense_flops_per_sample() == bottom + dots + top + head == 311
    assert model.dense_parameter_count() == (3 * 8 + 8) + (8 * 4 + 4) + (10 * 6 + 6) + (6 + 1) == 141
    # the counter sees the linear layers' products and the whole 4x4 Gram matrix of the bmm
    linear = 2 * (3 * 8 + 8 * 4 + 10 * 6 + 6 * 1)
    assert _matmul_flops_per_sample(model, _batch(model.feature_names, 3, 3)) == linear + 2 * 4 * 4 * 4
    assert linear + (8 + 4 + 6 + 1) + dots == 311


def test_deepfm_small_hand_count_and_counter() -> None:
    tables = _tables([4, 4, 4])
    model = DeepFM(ebc(tables), wide_ebc(tables, 2), num_dense_features=2, deep_layer_sizes=[5],
                   tasks=[Task("click"), Task("purchase")])
    dense_fields = 2 * 4  # x_j * v_j
    # FM over 5 fields of dim 4: field sum 16, its square 4, squares 20, their sum 16, difference 4,
    # halving 4, sum over dims 3
    fm = 16 + 4 + 20 + 16 + 4 + 4 + 3
    deep = 2 * (5 * 4) * 5 + 5
    head = 2 * 5 * 2 + 2
    wide = 2 * 2 * 2 + 2 + 3 * 2  # dense product, bias, three per-id weight vectors
    combine = 2 + 2 * 2  # FM scale per task, two adds per task
    assert model.dense_flops_per_sample() == dense_fields + fm + deep + head + wide + combine == 324
    assert _matmul_flops_per_sample(model, _batch(model.feature_names, 3, 2)) == 2 * (20 * 5 + 5 * 2 + 2 * 2)
    params = 2 * 4 + 2 + (20 * 5 + 5) + (5 * 2 + 2) + (2 * 2 + 2)  # fields, fm scale, deep, head, wide
    assert model.dense_parameter_count() == params == 133


def test_wide_deep_small_hand_count_and_counter() -> None:
    tables = _tables([4, 6])
    model = WideDeep(ebc(tables), wide_ebc(tables, 1), num_dense_features=2, deep_layer_sizes=[5])
    deep = 2 * (2 + 4 + 6) * 5 + 5
    head = 2 * 5 + 1
    wide = 2 * 2 + 1 + 2
    assert model.dense_flops_per_sample() == deep + head + wide + 1 == 144
    assert _matmul_flops_per_sample(model, _batch(model.feature_names, 2, 2)) == 2 * (12 * 5 + 5 + 2)


def test_two_tower_hand_count_and_counter() -> None:
    model = TwoTower(ebc(_tables([4, 4], "u")), ebc(_tables([4, 4], "i")), [6, 3], [5, 3])
    user = (2 * 8 * 6 + 6) + (2 * 6 * 3 + 3)
    item = (2 * 8 * 5 + 5) + (2 * 5 * 3 + 3)
    assert model.dense_flops_per_sample() == user + item + (2 * 3 + 1) == 266
    batch_size = 4
    assert model.dense_flops_per_sample(batch_size) == user + item + batch_size * 7
    batch = _batch(model.user_feature_names + model.item_feature_names, batch_size, 0)
    matmuls = 2 * (8 * 6 + 6 * 3 + 8 * 5 + 5 * 3) + 2 * 3 * batch_size  # towers + one row of scores
    assert _matmul_flops_per_sample(model, batch) == matmuls


def test_block_counts_by_hand() -> None:
    # FM, 3 fields of dim 2: field sum 4, square 2, squares 6, their sum 4, difference 2, halving 2, reduce 1
    assert fm_flops(FMInteraction(), num_fields=3, embedding_dim=2) == 21
    assert fm_flops(FMInteraction(reduce=False), num_fields=3, embedding_dim=2) == 20
    # DCN v1 layer of width 4: dot 8, scale 4, bias 4, residual 4
    assert cross_net_flops(CrossNet(4, 2)) == 2 * 20


def test_dense_parameter_count_excludes_embedding_modules() -> None:
    emb = nn.Embedding(1000, 8)
    model = nn.Sequential(nn.Linear(8, 4), emb)
    assert dense_parameter_count(model, [emb]) == 8 * 4 + 4
    assert dense_parameter_count(model, []) == 8 * 4 + 4 + 8000

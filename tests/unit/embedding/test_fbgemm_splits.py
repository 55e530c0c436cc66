"""fbgemm's per-table views (``table_weight``, ``table_states``) are made once per storage: the same values as
fbgemm's own split, in-place updates seen, a TBE whose storage moved split again."""

from __future__ import annotations

import pytest
import torch

from recframe.embedding.config import SparseOptimizer, TableConfig
from recframe.embedding.kernels import GroupSpec
from recframe.embedding.kernels.fbgemm import FbgemmEmbeddingKernel, fbgemm_import_error

pytestmark = pytest.mark.skipif(fbgemm_import_error() is not None, reason="fbgemm_gpu does not import here")


def kernel() -> FbgemmEmbeddingKernel:
    tables = [TableConfig(name=f"t{i}", num_embeddings=5 + i, embedding_dim=4, feature_names=[f"f{i}"])
              for i in range(3)]
    return FbgemmEmbeddingKernel(GroupSpec(tables=tables, feature_tables=[0, 1, 2],
                                           optimizer=SparseOptimizer(name="rowwise_adagrad"), pooled=True,
                                           device=torch.device("cpu")))


def test_cached_views_follow_the_tables() -> None:
    k = kernel()
    for i, (weight, states) in enumerate(zip(k.tbe.split_embedding_weights(), k.tbe.split_optimizer_states(),
                                             strict=True)):
        assert torch.equal(k.table_weight(i), weight) and k.table_weight(i).shape == (5 + i, 4)
        assert torch.equal(k.table_states(i)["momentum1"], states[0])
    assert k.table_weight(1) is k.table_weight(1)  # one split for all tables
    with torch.no_grad():
        k.tbe.split_embedding_weights()[2].fill_(3.0)
        k.tbe.split_optimizer_states()[0][0].fill_(7.0)
    assert bool((k.table_weight(2) == 3.0).all()) and bool((k.table_states(0)["momentum1"] == 7.0).all())


def test_a_moved_storage_is_split_again() -> None:
    k = kernel()
    before = k.table_weight(0)
    with torch.no_grad():
        moved = k.tbe.weights_host.detach().clone().fill_(5.0)
    if isinstance(k.tbe.weights_host, torch.nn.Parameter):
        moved = torch.nn.Parameter(moved)
    k.tbe.weights_host = moved
    assert bool((k.table_weight(0) == 5.0).all()) and not bool((before == 5.0).all())

"""The cross-folder contracts: every collection is an EmbeddingModule, every zoo model a RecModel, and
training tells embedding parameters from dense ones by the protocol (the sharded collection: in
tests/distributed/test_sharded.py)."""

from __future__ import annotations

import pytest
from torch import nn

from recframe.config.compose import compose_config
from recframe.embedding import EmbeddingBagCollection, EmbeddingCollection, SparseOptimizer, TableConfig
from recframe.embedding.protocol import EmbeddingModule
from recframe.models import MODELS
from recframe.models.protocol import RecModel
from recframe.training.builders import build_model
from recframe.training.module import dense_parameters, embedding_collections


def test_both_collections_are_embedding_modules_and_a_layer_is_not() -> None:
    bag = [TableConfig(name="t", num_embeddings=4, embedding_dim=2, feature_names=["f"])]
    seq = [TableConfig(name="s", num_embeddings=4, embedding_dim=2, feature_names=["g"], pooling="none")]
    assert isinstance(EmbeddingBagCollection(bag, SparseOptimizer(name="sgd"), backend="torch"), EmbeddingModule)
    assert isinstance(EmbeddingCollection(seq, SparseOptimizer(name="sgd"), backend="torch"), EmbeddingModule)
    assert not isinstance(nn.Linear(2, 2), EmbeddingModule)


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_every_zoo_model_is_a_rec_model_whose_tables_are_not_dense(name: str) -> None:
    experiment = ["+experiment=two_tower"] if MODELS[name].retrieval else ["+experiment=dlrm", f"model={name}"]
    cfg = compose_config([*experiment, "tables.num_embeddings=50", "run_dir=unused"])
    model = build_model(cfg)
    assert isinstance(model, RecModel)
    embedding_ids = {id(p) for c in embedding_collections(model).values() for p in c.parameters()}
    assert embedding_collections(model) and not embedding_ids & {id(p) for p in dense_parameters(model)}

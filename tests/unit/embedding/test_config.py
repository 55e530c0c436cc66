"""TableConfig and SparseOptimizer work as Hydra structured configs and validate as a whole."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.config import check_tables


def test_structured_config_merges_yaml_and_builds_a_collection() -> None:
    yaml = """
    name: user
    num_embeddings: 100
    embedding_dim: 8
    feature_names: [user_id, friend_ids]
    pooling: mean
    optimizer: {name: adam, lr: 0.001, weight_decay: 0.01, betas: [0.8, 0.9]}
    """
    merged = OmegaConf.merge(OmegaConf.structured(TableConfig), OmegaConf.create(yaml))
    table = OmegaConf.to_object(merged)
    assert isinstance(table, TableConfig) and isinstance(table.optimizer, SparseOptimizer)
    assert table.optimizer.betas == [0.8, 0.9] and table.init_scale is None
    ebc = EmbeddingBagCollection([table], SparseOptimizer(), backend="torch")
    assert ebc.backends == {"user": "torch"}


def test_structured_config_rejects_typos_and_wrong_types() -> None:
    schema = OmegaConf.structured(TableConfig)
    with pytest.raises(ConfigKeyError, match="num_embedings"):
        OmegaConf.merge(schema, {"num_embedings": 3})
    with pytest.raises(ConfigKeyError, match="optimizer.learning_rate"):
        OmegaConf.merge(schema, {"optimizer": {"learning_rate": 0.1}})
    with pytest.raises(ValidationError, match="embedding_dim"):
        OmegaConf.merge(schema, {"embedding_dim": "wide"})


def test_optimizer_problems() -> None:
    assert SparseOptimizer().problems() == []
    assert "no weight decay" in SparseOptimizer(name="adagrad", weight_decay=0.1).problems()[0]
    assert "only weight_decay_mode='decoupled'" in SparseOptimizer(
        name="adam", weight_decay=0.1, weight_decay_mode="l2").problems()[0]
    assert SparseOptimizer(name="rowwise_adagrad", weight_decay=0.1, weight_decay_mode="l2").problems() == []
    assert len(SparseOptimizer(name="nadam", lr=-1.0, betas=[0.9]).problems()) == 3


def test_collection_kind_must_match_pooling() -> None:
    sequence = TableConfig(name="s", num_embeddings=5, embedding_dim=4, feature_names=["s"], pooling="none")
    pooled = TableConfig(name="p", num_embeddings=5, embedding_dim=4, feature_names=["p"])
    assert "belongs in an EmbeddingCollection" in check_tables([sequence], SparseOptimizer(), sequence=False)[0]
    assert "needs pooling='none'" in check_tables([pooled], SparseOptimizer(), sequence=True)[0]

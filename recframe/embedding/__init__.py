"""Embedding tables and collections with fused sparse optimizers (fbgemm and torch backends).

Example:
    >>> from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    >>> ebc = EmbeddingBagCollection(
    ...     [TableConfig(name="t0", num_embeddings=100, embedding_dim=8, feature_names=["f0"])],
    ...     SparseOptimizer(name="rowwise_adagrad", lr=0.05), backend="torch")
    >>> sorted(ebc.state_dict())
    ['t0.weight']
"""

from recframe.embedding.collection import EmbeddingBagCollection, EmbeddingCollection
from recframe.embedding.config import SparseOptimizer, TableConfig

__all__ = ["EmbeddingBagCollection", "EmbeddingCollection", "SparseOptimizer", "TableConfig"]

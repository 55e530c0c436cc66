"""Data sources that produce ``recframe.sparse.Batch`` objects (they know no model)."""

from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_dataset import SyntheticDataset
from recframe.data.synthetic_hash import zipf_ids
from recframe.data.synthetic_retrieval import SyntheticRetrieval, SyntheticRetrievalConfig

__all__ = [
    "SyntheticConfig",
    "SyntheticCriteo",
    "SyntheticDataset",
    "SyntheticRetrieval",
    "SyntheticRetrievalConfig",
    "zipf_ids",
]

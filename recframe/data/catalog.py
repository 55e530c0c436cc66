"""Every data source, by ``data.kind``: importing this module imports each source's module, which registers it.

Adding a source: its module (the reader and a builder decorated ``@DATA_SOURCES.register("<kind>")``),
its schema in ``recframe/config/data.py`` and YAML in ``configs/data/``, and its import line here.

Example:
    >>> sorted(DATA_SOURCES.names())  # doctest: +NORMALIZE_WHITESPACE
    ['criteo_binary', 'criteo_multihot', 'criteo_tsv', 'movielens', 'movielens_retrieval', 'synthetic',
     'synthetic_retrieval', 'tabular']
"""

from __future__ import annotations

from omegaconf import DictConfig

import recframe.data.binary
import recframe.data.movielens
import recframe.data.movielens_retrieval
import recframe.data.multihot
import recframe.data.sources
import recframe.data.tabular  # noqa: F401 (each module registers its source)
from recframe.data.source import DATA_SOURCES, DataSource


def build_source(cfg: DictConfig) -> DataSource:
    """The data source of ``cfg.data.kind``, built from the run config.

    Raises:
        ValueError: an unknown kind, listing the known ones.
    """
    return DATA_SOURCES[cfg.data.kind](cfg)

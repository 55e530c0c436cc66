"""Turn config nodes into the library's own specs (tables, tasks), shared by checks and builders.

Example:
    >>> from recframe.config.compose import compose_config
    >>> tables = table_configs(compose_config(["+experiment=dlrm"]))
    >>> len(tables), tables[0].name, tables[0].num_embeddings, tables[0].embedding_dim
    (26, 't_cat_0', 100000, 64)
"""

from __future__ import annotations

from omegaconf import DictConfig

from recframe.embedding.config import SparseOptimizer, TableConfig
from recframe.models.heads import Task


def _rows(spec: DictConfig, tables: DictConfig) -> int:
    rows = spec.num_embeddings if spec.num_embeddings is not None else tables.num_embeddings
    return rows if tables.row_cap is None else min(rows, tables.row_cap)


def table_configs(cfg: DictConfig) -> list[TableConfig]:
    """The tables of ``cfg.tables``, with the table set's default sizes filled in and rows capped at ``row_cap``."""
    tables = cfg.tables
    return [
        TableConfig(
            name=str(name),
            num_embeddings=_rows(spec, tables),
            embedding_dim=spec.embedding_dim if spec.embedding_dim is not None else tables.embedding_dim,
            feature_names=list(spec.features),
            pooling=spec.pooling,
            weight_dtype=tables.weight_dtype,
            id_policy=tables.id_policy,
        )
        for name, spec in tables.specs.items()
    ]


def sparse_optimizer(cfg: DictConfig) -> SparseOptimizer:
    """``cfg.optim.sparse`` as the embedding package's dataclass."""
    s = cfg.optim.sparse
    return SparseOptimizer(name=s.name, lr=s.lr, eps=s.eps, weight_decay=s.weight_decay,
                           weight_decay_mode=s.weight_decay_mode, betas=list(s.betas))


def tasks(cfg: DictConfig) -> list[Task]:
    """The model's tasks (none for retrieval models)."""
    if "tasks" not in cfg.model:
        return []
    return [Task(name=t.name, weight=t.weight) for t in cfg.model.tasks]


def feature_rows(cfg: DictConfig) -> dict[str, int]:
    """Rows of the table serving each sparse feature (its id range), by feature name."""
    return {f: t.num_embeddings for t in table_configs(cfg) for f in t.feature_names}

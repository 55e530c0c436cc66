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


def stats_period(setting: str | int, max_steps: int) -> int:
    """The table-health period of ``logger.table_stats_every_n_steps``: an integer as given (0: off), or ``auto``:
    ``max(1, min(200, max_steps // 5))``, about 5 points a run (200 when training by epochs).

    Example:
        >>> stats_period("auto", 30), stats_period("auto", 300), stats_period("auto", -1), stats_period("0", 30)
        (6, 60, 200, 0)

    Raises:
        ValueError: neither ``auto`` nor an integer >= 0.
    """
    return _period(setting, max_steps, points=5, longest=200, smallest=0,
                   rule="must be auto, 0 (off) or a number of steps >= 1")


def log_period(setting: str | int, max_steps: int) -> int:
    """The scalar logging period of ``trainer.log_every_n_steps``: an integer as given, or ``auto``:
    ``max(1, min(50, max_steps // 20))``, about 20 points a run (50 when training by epochs, ``max_steps`` -1).

    Example:
        >>> log_period("auto", 30), log_period("auto", 400), log_period("auto", 100_000), log_period("auto", -1)
        (1, 20, 50, 50)
        >>> log_period("7", 30)
        7

    Raises:
        ValueError: neither ``auto`` nor an integer >= 1.
    """
    return _period(setting, max_steps, points=20, longest=50, smallest=1, rule="must be auto or a number of steps >= 1")


def _period(setting: str | int, max_steps: int, points: int, longest: int, smallest: int, rule: str) -> int:
    """``auto``: ``max(1, min(longest, max_steps // points))`` (``longest`` without a step count); else the integer
    given, at least ``smallest`` (a ValueError saying ``rule`` otherwise)."""
    if str(setting) == "auto":
        return longest if max_steps <= 0 else max(1, min(longest, max_steps // points))
    try:
        period = int(str(setting))
    except ValueError:
        period = smallest - 1
    if period < smallest:
        raise ValueError(f"{rule}, got {setting!r}")
    return period

"""Build the parts of a run from a validated config: tables, model, objective, data.

Example:
    >>> from recframe.config.compose import compose_config
    >>> cfg = compose_config(["+experiment=dlrm", "tables.num_embeddings=100"])
    >>> type(build_model(cfg)).__name__
    'DLRM'
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from recframe.config.resolve import sparse_optimizer, table_configs, tasks
from recframe.data.source import DataSource
from recframe.embedding.config import TableConfig
from recframe.training.datamodule import RecDataModule
from recframe.training.objectives import CTRObjective, Objective, RetrievalObjective
from recframe.vocab import OutputDtype


def build_collection(cfg: DictConfig, features: list[str] | None = None,
                     tables: list[TableConfig] | None = None, device: str | None = None,
                     output_dtype: OutputDtype = OutputDtype.fp32) -> nn.Module:
    """An EmbeddingBagCollection with the fused sparse optimizer.

    Args:
        cfg: the run config.
        features: keep only the tables serving these features (None: all tables).
        tables: the tables to build (None: the config's).
        device: where the tables live; ``"meta"`` builds them without memory (to be sharded).
        output_dtype: the collection's ``output_dtype`` (``build_model`` resolves ``tables.output_dtype``).
    """
    from recframe.embedding import EmbeddingBagCollection

    chosen = tables if tables is not None else table_configs(cfg)
    if features is not None:
        chosen = [t for t in chosen if set(t.feature_names) & set(features)]
    return EmbeddingBagCollection(chosen, sparse_optimizer(cfg), backend=cfg.tables.backend, device=device,
                                  output_dtype=output_dtype)


def build_model(cfg: DictConfig, embedding_device: str | None = None) -> nn.Module:
    """The model named by ``cfg.model.name`` (``recframe.models.zoo.MODELS``), owning its embedding collection(s).

    Args:
        cfg: the run config.
        embedding_device: where the tables live (None: the default device; ``"meta"``: to be sharded).
    """
    from recframe.models import MODELS, ModelContext, wide_tables

    run_tasks = tasks(cfg)
    entry = MODELS[cfg.model.name]
    # tables.output_dtype=auto: autocast's dtype for the models that read their pooled embeddings in it (ModelEntry)
    in_autocast_dtype = entry.reads_pooled_in_autocast_dtype(cfg.model, len(cfg.features.dense))
    pooled_dtype = OutputDtype.auto if (cfg.tables.output_dtype == OutputDtype.auto
                                        and in_autocast_dtype) else OutputDtype.fp32
    context = ModelContext(
        num_dense_features=len(cfg.features.dense), tasks=run_tasks,
        embeddings=lambda features: build_collection(cfg, features, device=embedding_device,
                                                     output_dtype=pooled_dtype),
        wide_embeddings=lambda out: build_collection(cfg, tables=wide_tables(table_configs(cfg), out_features=out),
                                                     device=embedding_device),
    )
    return entry.build(cfg.model, context)


def build_objective(cfg: DictConfig) -> Objective:
    """The loss and validation metrics that fit the model (retrieval or CTR: the zoo entry says)."""
    from recframe.models import MODELS

    if MODELS[cfg.model.name].retrieval:
        return RetrievalObjective(ks=list(cfg.model.recall_ks))
    return CTRObjective(tasks(cfg))


def build_datamodule(cfg: DictConfig) -> RecDataModule:
    """The data module around the source of ``cfg.data.kind`` (``recframe.data.catalog``)."""
    from recframe.data.catalog import build_source

    return _datamodule(cfg, build_source(cfg))


def _datamodule(cfg: DictConfig, source: DataSource) -> RecDataModule:
    """A data module around ``source`` with the run's loader and pipeline settings."""
    return RecDataModule(source, num_workers=cfg.data.num_workers, pin_memory=cfg.data.pin_memory,
                         pipeline=cfg.trainer.pipeline)

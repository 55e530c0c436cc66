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

from recframe.config.data import GenerateOn
from recframe.config.resolve import sparse_optimizer, table_configs, tasks
from recframe.data.source import DataSource
from recframe.embedding.config import TableConfig
from recframe.training.datamodule import RecDataModule
from recframe.training.objectives import CTRObjective, Objective, RetrievalObjective


def build_collection(cfg: DictConfig, features: list[str] | None = None,
                     tables: list[TableConfig] | None = None, device: str | None = None) -> nn.Module:
    """An EmbeddingBagCollection with the fused sparse optimizer.

    Args:
        cfg: the run config.
        features: keep only the tables serving these features (None: all tables).
        tables: the tables to build (None: the config's).
        device: where the tables live; ``"meta"`` builds them without memory (to be sharded).
    """
    from recframe.embedding import EmbeddingBagCollection

    chosen = tables if tables is not None else table_configs(cfg)
    if features is not None:
        chosen = [t for t in chosen if set(t.feature_names) & set(features)]
    return EmbeddingBagCollection(chosen, sparse_optimizer(cfg), backend=cfg.tables.backend, device=device)


def build_model(cfg: DictConfig, embedding_device: str | None = None) -> nn.Module:
    """The model named by ``cfg.model.name`` (``recframe.models.zoo.MODELS``), owning its embedding collection(s).

    Args:
        cfg: the run config.
        embedding_device: where the tables live (None: the default device; ``"meta"``: to be sharded).
    """
    from recframe.models import MODELS, ModelContext, wide_tables

    run_tasks = tasks(cfg)
    context = ModelContext(
        num_dense_features=len(cfg.features.dense), tasks=run_tasks,
        embeddings=lambda features: build_collection(cfg, features, device=embedding_device),
        wide_embeddings=lambda out: build_collection(cfg, tables=wide_tables(table_configs(cfg), out_features=out),
                                                     device=embedding_device),
    )
    return MODELS[cfg.model.name].build(cfg.model, context)


def build_objective(cfg: DictConfig) -> Objective:
    """The loss and validation metrics that fit the model (retrieval or CTR: the zoo entry says)."""
    from recframe.models import MODELS

    if MODELS[cfg.model.name].retrieval:
        return RetrievalObjective(ks=list(cfg.model.recall_ks))
    return CTRObjective(tasks(cfg))


def build_datamodule(cfg: DictConfig) -> RecDataModule:
    """The data module of ``cfg.data``."""
    from recframe.data import synthetic, synthetic_retrieval
    from recframe.data.source import SyntheticSource

    data = cfg.data
    rows = {f: t.num_embeddings for t in table_configs(cfg) for f in t.feature_names}
    if data.kind == "synthetic":
        ids = list(data.ids_per_feature)
        generator = synthetic.SyntheticCriteo(
            synthetic.SyntheticConfig(
                num_dense_features=len(cfg.features.dense),
                table_sizes=tuple(rows[f] for f in cfg.features.sparse),
                ids_per_feature=ids[0] if len(ids) == 1 else tuple(ids),
                zipf_exponent=data.zipf_exponent,
                signal_strength=data.signal_strength,
                sparse_names=tuple(cfg.features.sparse),
                num_tasks=len(tasks(cfg)),
            ),
            seed=data.seed,
        )
    elif data.kind == "synthetic_retrieval":
        generator = synthetic_retrieval.SyntheticRetrieval(
            synthetic_retrieval.SyntheticRetrievalConfig(num_users=data.num_users, num_items=data.num_items,
                                               num_clusters=data.num_clusters, history_length=data.history_length),
            seed=data.seed,
        )
    elif data.kind == "criteo_tsv":
        from recframe.data.sources import CriteoTsvSource

        source = CriteoTsvSource(
            str(data.path), keys=list(cfg.features.sparse), table_rows=[rows[f] for f in cfg.features.sparse],
            batch_size=data.batch_size, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
            id_mapping=data.id_mapping, vocab_threshold=data.vocab_threshold, on_error=data.on_error,
            max_examples=data.max_reported_errors, pad_short_rows=data.pad_short_rows,
        )
        return _datamodule(cfg, source)
    elif data.kind == "criteo_binary":
        from recframe.data.binary import CriteoBinarySource

        binary = CriteoBinarySource(
            str(data.path), keys=list(cfg.features.sparse), table_rows=[rows[f] for f in cfg.features.sparse],
            batch_size=data.batch_size, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
            id_mapping=data.id_mapping, vocab_threshold=data.vocab_threshold, shuffle_batches=data.shuffle_batches,
            pin_memory=data.pin_memory,
        )
        return _datamodule(cfg, binary)
    elif data.kind == "criteo_multihot":
        from recframe.data.multihot import CriteoMultiHotSource

        multihot = CriteoMultiHotSource(
            str(data.path), keys=list(cfg.features.sparse), batch_size=data.batch_size, val_fraction=data.val_fraction,
            shuffle=data.shuffle, seed=data.seed, pin_memory=data.pin_memory,
            bag_sizes=list(data.ids_per_feature) or None,
        )
        return _datamodule(cfg, multihot)
    elif data.kind == "movielens":
        from recframe.data.movielens import MovieLensSource

        movielens = MovieLensSource(
            str(data.path), dense_names=list(cfg.features.dense), sparse_names=list(cfg.features.sparse),
            table_rows=rows, batch_size=data.batch_size, split=data.split, val_fraction=data.val_fraction,
            shuffle=data.shuffle, seed=data.seed, vocab_threshold=data.vocab_threshold,
            positive_rating=data.positive_rating, zip_prefix=data.zip_prefix,
        )
        return _datamodule(cfg, movielens)
    elif data.kind == "movielens_retrieval":
        from recframe.data.movielens_retrieval import MovieLensRetrievalSource

        retrieval = MovieLensRetrievalSource(
            str(data.path), sparse_names=list(cfg.features.sparse), table_rows=rows, batch_size=data.batch_size,
            history_length=data.history_length, shuffle=data.shuffle, seed=data.seed,
            vocab_threshold=data.vocab_threshold, zip_prefix=data.zip_prefix,
        )
        return _datamodule(cfg, retrieval)
    elif data.kind == "tabular":
        from recframe.data.spec import tabular_spec
        from recframe.data.tabular import TabularSource

        tabular = TabularSource(
            str(data.path), tabular_spec(cfg), table_rows=rows, batch_size=data.batch_size, fmt=data.format,
            delimiter=data.delimiter, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
            on_error=data.on_error, max_examples=data.max_reported_errors,
        )
        return _datamodule(cfg, tabular)
    else:
        raise ValueError(f"data.kind={data.kind!r} is unknown")
    generate_on = data.generate_on if data.kind == "synthetic" else GenerateOn.host
    return _datamodule(cfg, SyntheticSource(generator, batch_size=data.batch_size, num_val_batches=data.num_val_batches,
                                            generate_on=generate_on))


def _datamodule(cfg: DictConfig, source: DataSource) -> RecDataModule:
    """A data module around ``source`` with the run's loader and pipeline settings."""
    return RecDataModule(source, num_workers=cfg.data.num_workers, pin_memory=cfg.data.pin_memory,
                         pipeline=cfg.trainer.pipeline)

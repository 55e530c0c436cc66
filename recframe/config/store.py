"""Registers every schema in Hydra's ConfigStore and says where the YAML configs are.

Each YAML file of a group names its schema first in its defaults list (``- dlrm_schema``), so
typos fail at composition with the full key path.

Example:
    >>> register_schemas()
    >>> CONFIG_DIR.joinpath("train.yaml").is_file()
    True
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from recframe.config import data, schema, sharding
from recframe.models import MODELS

# configs/ lives at the repository top and is the package recframe.configs (setup.py maps it at build time, so
# the wheel ships it; an editable install maps it through setuptools' finder). Hydra reads it as CONFIG_SEARCH_PATH.
CONFIG_MODULE = "recframe.configs"
CONFIG_SEARCH_PATH = f"pkg://{CONFIG_MODULE}"
CONFIG_DIR = Path(importlib.import_module(CONFIG_MODULE).__file__).parent

SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): schema.TrainConfig,
    ("features", "features_schema"): schema.FeaturesConfig,
    ("tables", "tables_schema"): schema.TablesConfig,
    ("optim", "optim_schema"): schema.OptimConfig,
    ("trainer", "trainer_schema"): schema.TrainerConfig,
    ("logger", "logger_schema"): schema.LoggerConfig,
    ("sharding", "sharding_schema"): sharding.ShardingConfig,
    ("data", "synthetic_schema"): data.SyntheticDataConfig,
    ("data", "synthetic_retrieval_schema"): data.SyntheticRetrievalDataConfig,
    ("data", "criteo_tsv_schema"): data.CriteoTsvDataConfig,
    ("data", "criteo_binary_schema"): data.CriteoBinaryDataConfig,
    ("data", "criteo_multihot_schema"): data.CriteoMultiHotDataConfig,
    ("data", "movielens_schema"): data.MovieLensDataConfig,
    ("data", "movielens_retrieval_schema"): data.MovieLensRetrievalDataConfig,
    ("data", "tabular_schema"): data.TabularDataConfig,
    **{("model", f"{name}_schema"): entry.schema for name, entry in MODELS.items()},  # each model's own module
}


@functools.cache
def register_schemas() -> None:
    """Put every schema into Hydra's ConfigStore (once per process)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)

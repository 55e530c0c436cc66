"""Schemas of the ``data`` config group: one per data source (``data.kind``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING


class GenerateOn(str, Enum):
    """Where synthetic batches are made."""

    auto = "auto"  # on the training device when it is a GPU, else on the host
    host = "host"  # numpy on the host (DataLoader workers can share the work)
    device = "device"  # torch on the training device (no workers needed)


@dataclass
class SyntheticDataConfig:
    """Criteo-shaped synthetic clicks with labels from a hidden model (recframe.data.synthetic)."""

    kind: str = "synthetic"  # data source: synthetic
    batch_size: int = 2048  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes (host generation only)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    generate_on: GenerateOn = GenerateOn.auto  # auto (the GPU when training on one) | host (numpy) | device (torch)
    num_val_batches: int = 10  # batches of the fixed validation set (never seen in training)
    ids_per_feature: list[int] = field(default_factory=lambda: [1])  # ids per sample per sparse feature (one: all)
    zipf_exponent: float = 1.05  # skew of id frequencies (0: uniform)
    signal_strength: float = 2.0  # scale of the hidden model's logits (higher: an easier task)
    seed: int = 1234  # seed of the hidden model and of the sample stream


@dataclass
class SyntheticRetrievalDataConfig:
    """Synthetic (user, item) pairs from hidden user clusters, for two-tower retrieval."""

    kind: str = "synthetic_retrieval"  # data source: synthetic_retrieval
    batch_size: int = 256  # (user, positive item) pairs per batch per rank
    num_workers: int = 0  # DataLoader worker processes
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    num_val_batches: int = 4  # batches of the fixed validation set
    num_users: int = 1000  # users (rows of the user-id table)
    num_items: int = 500  # items (rows of the item-id table)
    num_clusters: int = 25  # hidden interest clusters
    history_length: int = 5  # items in each user's history feature
    seed: int = 1234  # seed of the hidden clusters and of the sample stream


@dataclass
class CriteoTsvDataConfig:
    """A Criteo TSV file (Kaggle train.txt or 1TB day_N layout) read into memory (recframe.data.sources)."""

    kind: str = "criteo_tsv"  # data source: criteo_tsv
    path: str = MISSING  # the TSV file: label, 13 integer, 26 hexadecimal fields per line (fsspec URL or path; .gz ok)
    batch_size: int = 2048  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes (started per epoch)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    val_fraction: float = 0.1  # the last fraction of valid rows (file order) is the validation set
    shuffle: bool = True  # shuffle the training rows every epoch (False: file order)
    seed: int = 1234  # seed of the per-epoch shuffles
    id_mapping: str = "modulo"  # value -> table row: modulo (1 + v % (rows-1)) | vocab (by count); row 0: missing
    vocab_threshold: int = 1  # vocab: values seen fewer times in the training rows share the out-of-vocabulary row 1
    on_error: str = "skip"  # malformed lines: skip (count per kind, log the first) | error (stop at the first)
    max_reported_errors: int = 5  # malformed lines described (file:line: field) per kind in the log
    pad_short_rows: bool = False  # read lines with fewer fields as having trailing empty fields (stripped exports)


@dataclass
class CriteoBinaryDataConfig:
    """A directory written by ``recframe preprocess criteo``, memory-mapped (recframe.data.binary)."""

    kind: str = "criteo_binary"  # data source: criteo_binary
    path: str = MISSING  # the directory with dense.npy, sparse.npy, labels.npy and feature_map.json
    batch_size: int = 2048  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes (started per epoch)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    val_fraction: float = 0.1  # the last fraction of rows (input order) is the validation set
    shuffle: bool = True  # shuffle the training rows every epoch (False: input order)
    seed: int = 1234  # seed of the per-epoch shuffles
    id_mapping: str = "modulo"  # must match the directory: modulo (raw or --hash-size) | vocab (--vocab-threshold)
    vocab_threshold: int = 1  # vocab: the --vocab-threshold the directory was made with (checked)
    shuffle_batches: bool = False  # shuffle: permute the order of contiguous batches (slices) instead of the rows


@dataclass
class CriteoMultiHotDataConfig:
    """A directory of ``recframe preprocess multihot``: MLPerf DLRM-DCNv2's layout (recframe.data.multihot)."""

    kind: str = "criteo_multihot"  # data source: criteo_multihot
    path: str = MISSING  # the directory with dense.npy, labels.npy, sparse_C<i>.npy and feature_map.json
    batch_size: int = 8192  # samples per batch per rank (contiguous rows)
    num_workers: int = 0  # DataLoader worker processes (started per epoch; one core reads > 2M samples/s)
    pin_memory: bool = False  # page-locked batches, written there directly (useful with GPUs)
    val_fraction: float = 0.05  # the last fraction of rows (file order) is the validation set
    shuffle: bool = True  # permute the order of the contiguous training batches every epoch (rows keep file order)
    seed: int = 1234  # seed of the per-epoch batch orders
    ids_per_feature: list[int] = field(default_factory=list)  # bag size per sparse feature, checked against the
    # directory (mlperf_dcnv2 sets MLPerf's); empty: the directory's


@dataclass
class MovieLensDataConfig:
    """MovieLens ratings as clicks (rating >= positive_rating) with user and item features (data.movielens)."""

    kind: str = "movielens"  # data source: movielens
    path: str = MISSING  # ml-100k, ml-1m or ml-latest(-small) directory, or a joined CSV (layout detected)
    batch_size: int = 256  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes (started per epoch)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    split: str = "u1"  # u1..u5, ua, ub: GroupLens's 100K .base/.test files | time: the last val_fraction by time
    val_fraction: float = 0.1  # split=time: the fraction of the latest ratings that validates
    shuffle: bool = True  # shuffle the training ratings every epoch
    seed: int = 1234  # seed of the per-epoch shuffles
    vocab_threshold: int = 1  # values seen fewer times in training share the out-of-vocabulary row 1
    positive_rating: float = 4  # ratings at or above it are positives (label 1)
    zip_prefix: int = 3  # leading characters of the zip code kept for the user_zip feature


@dataclass
class MovieLensRetrievalDataConfig:
    """MovieLens interactions for two-tower retrieval: user history -> next item; each user's last item validates."""

    kind: str = "movielens_retrieval"  # data source: movielens_retrieval
    path: str = MISSING  # ml-100k, ml-1m or ml-latest(-small) directory, or a joined CSV (layout detected)
    batch_size: int = 256  # (user, item) pairs per batch per rank (validation: the in-batch candidates)
    num_workers: int = 0  # DataLoader worker processes (started per epoch)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    history_length: int = 20  # items in the user_history feature (the latest before the target item)
    shuffle: bool = True  # shuffle the training samples every epoch
    seed: int = 1234  # seed of the per-epoch shuffles
    vocab_threshold: int = 1  # values seen fewer times in training share the out-of-vocabulary row 1
    zip_prefix: int = 3  # leading characters of the zip code kept for the user_zip feature


@dataclass
class TabularDataConfig:
    """A CSV or Parquet table described by a feature spec (data.spec) or the features config (recframe.data.tabular).

    With ``spec`` (a YAML file, recframe.data.spec), the spec's settings win; what it leaves out comes
    from the keys below (label, positive_threshold, dense_transform, id_mapping, vocab_threshold,
    multi_value_separator). Without it, the features config names the columns (``columns`` renames).
    """

    kind: str = "tabular"  # data source: tabular
    path: str = MISSING  # the CSV file (first row: column names) or Parquet file
    spec: str | None = None  # feature spec YAML file: label, dense and categorical columns (None: the features config)
    format: str = "auto"  # auto (.parquet/.pq: Parquet, else CSV) | csv | parquet (needs pip install recframe[parquet])
    batch_size: int = 256  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes (started per epoch)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    label: str = "label"  # the label column: 0/1, or a number compared with positive_threshold
    positive_threshold: float | None = None  # label = value >= this (e.g. 4 for ratings); None: the column is 0/1
    columns: dict[str, str] = field(default_factory=dict)  # feature name -> column name where they differ
    delimiter: str = ","  # field separator
    dense_transform: str = "log1p"  # dense columns: none | log1p (log(1 + max(x, 0))); empty -> 0 first
    multi_value_separator: str = ""  # splits categorical fields into bags of ids, e.g. "|" ("": one id per field)
    id_mapping: str = "modulo"  # value -> table row: modulo (1 + hash % (rows-1)) | vocab (by count); row 0: missing
    vocab_threshold: int = 1  # vocab: values seen fewer times in the training rows share the out-of-vocabulary row 1
    val_fraction: float = 0.1  # the last fraction of valid rows (file order) is the validation set
    shuffle: bool = True  # shuffle the training rows every epoch
    seed: int = 1234  # seed of the per-epoch shuffles
    on_error: str = "skip"  # malformed rows: skip (count per kind, log the first) | error (stop at the first)
    max_reported_errors: int = 5  # malformed rows described (file:line: column) per kind in the log


FILE_KINDS = ("criteo_tsv", "criteo_binary", "criteo_multihot", "movielens", "movielens_retrieval",
              "tabular")  # kinds with data.path


def _feature_map_value(directory: str, key: str) -> Any:
    from recframe.data.binary import feature_map_value

    return feature_map_value(directory, key)


def _feature_spec_value(path: str | None, key: str) -> Any:
    from recframe.data.spec import feature_spec_value

    return feature_spec_value(path, key)


def register_resolvers() -> None:
    """Resolvers of the data configs: ``${feature_map:DIR,key}`` (a value of DIR's feature_map.json, e.g.
    ``num_embeddings.C1``) and ``${feature_spec:FILE,key}`` (``dense``/``sparse`` names or ``tables`` of a spec)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("feature_map"):
        OmegaConf.register_new_resolver("feature_map", _feature_map_value)
    if not OmegaConf.has_resolver("feature_spec"):
        OmegaConf.register_new_resolver("feature_spec", _feature_spec_value)


def file_data_problems(cfg: Any) -> list[Any]:
    """Problems of a file data source's settings (``data.kind`` in ``FILE_KINDS``), as ``Problem``s.

    Args:
        cfg: the composed run config.

    Example:
        >>> from recframe.config.compose import compose_config
        >>> [p.key for p in file_data_problems(compose_config(["data=criteo_tsv"]))]
        ['data.path']
    """
    from omegaconf import OmegaConf

    from recframe.config.compose import Problem

    data = cfg.data
    out: list[Problem] = []
    if OmegaConf.is_missing(data, "path"):
        example = {"criteo_tsv": "/path/to/train.txt", "criteo_binary": "/path/to/preprocessed_dir",
                   "criteo_multihot": "/path/to/multihot_dir", "movielens": "/path/to/ml-100k",
                   "movielens_retrieval": "/path/to/ml-100k", "tabular": "/path/to/table.csv"}[data.kind]
        noun = "file" if data.kind in ("criteo_tsv", "tabular") else "directory"
        out.append(Problem("data.path", "is not set", f"give the {noun}: data.path={example}"))
    elif data.kind == "criteo_binary" and not (Path(data.path) / "feature_map.json").is_file():
        out.append(Problem("data.path", f"{data.path} has no feature_map.json (from {Path.cwd()})",
                           f"make it with: recframe preprocess criteo --input FILE... --output {data.path}"))
    elif data.kind in ("criteo_tsv", "tabular") and "://" not in data.path and not Path(data.path).is_file():
        out.append(Problem("data.path", f"no such file: {data.path} (from {Path.cwd()})",
                           "check the path; relative paths start from where recframe runs"))
    if data.kind.startswith("movielens"):
        return out + _movielens_problems(cfg)
    if data.kind == "criteo_multihot":
        return out + _multihot_problems(cfg)
    if not 0.0 < data.val_fraction < 1.0:
        out.append(Problem("data.val_fraction", f"must be in (0, 1), got {data.val_fraction}"))
    if data.kind == "tabular":
        return out + _tabular_problems(cfg)
    if data.id_mapping not in ("modulo", "vocab"):
        out.append(Problem("data.id_mapping", f"unknown mapping {data.id_mapping!r}", "choose modulo or vocab"))
    if data.vocab_threshold < 1:
        out.append(Problem("data.vocab_threshold", f"must be >= 1, got {data.vocab_threshold}"))
    if data.kind == "criteo_tsv" and data.on_error not in ("skip", "error"):
        out.append(Problem("data.on_error", f"unknown policy {data.on_error!r}", "choose skip or error"))
    if data.kind == "criteo_tsv" and data.max_reported_errors < 0:
        out.append(Problem("data.max_reported_errors", f"must be >= 0, got {data.max_reported_errors}"))
    dense, sparse = len(cfg.features.dense), len(cfg.features.sparse)
    if (dense, sparse) != (13, 26):
        out.append(Problem("features", f"data={data.kind} has 13 dense and 26 sparse features (Criteo), the features "
                           f"config has {dense} and {sparse}", "use features=criteo"))
    return out + _table_problems(cfg)


def _multihot_problems(cfg: Any) -> list[Any]:
    """``criteo_multihot``: the directory's feature counts, bag sizes and table sizes against the config."""
    from omegaconf import OmegaConf

    from recframe.config.compose import Problem
    from recframe.config.resolve import table_configs
    from recframe.data.multihot import load_multihot_feature_map
    from recframe.data.report import DataError

    data, out = cfg.data, []
    if not 0.0 < data.val_fraction < 1.0:
        out.append(Problem("data.val_fraction", f"must be in (0, 1), got {data.val_fraction}"))
    if OmegaConf.is_missing(data, "path"):
        return out
    try:
        fm = load_multihot_feature_map(data.path)
    except DataError as error:
        return [*out, Problem("data.path", str(error))]
    dense, sparse = list(cfg.features.dense), list(cfg.features.sparse)
    if (len(dense), len(sparse)) != (len(fm["dense_names"]), len(fm["sparse_names"])):
        return [*out, Problem("features", f"{data.path} has {len(fm['dense_names'])} dense and "
                              f"{len(fm['sparse_names'])} sparse features, the features config {len(dense)} and "
                              f"{len(sparse)}", "use features=mlperf_dcnv2 (or criteo)")]
    if list(data.ids_per_feature) and list(data.ids_per_feature) != fm["bag_sizes"]:
        out.append(Problem("data.ids_per_feature", f"{list(data.ids_per_feature)} differ from the bag sizes of "
                           f"{data.path}: {fm['bag_sizes']}", f"set data.ids_per_feature={fm['bag_sizes']} or "
                           "make the directory with matching --bag-sizes"))
    rows = dict(zip(sparse, fm["num_embeddings"].values(), strict=True))
    small = {t.name: (t.num_embeddings, max(rows[f] for f in t.feature_names)) for t in table_configs(cfg)
             if t.num_embeddings < max(rows[f] for f in t.feature_names)}
    if small and cfg.tables.id_policy != "modulo":
        some = ", ".join(f"{name} has {r} rows, ids < {ids}" for name, (r, ids) in list(small.items())[:3])
        out.append(Problem("tables.id_policy", f"ids of {data.path} go past {len(small)} tables ({some}"
                           f"{', ...' if len(small) > 3 else ''})", "add tables.id_policy=modulo (ids past a table "
                           "wrap around), or give the tables the directory's num_embeddings"))
    return out


def _table_problems(cfg: Any) -> list[Any]:
    from recframe.config.compose import Problem
    from recframe.config.resolve import table_configs

    out = []
    for table in table_configs(cfg):
        if table.num_embeddings < 2:
            out.append(Problem(f"tables.specs.{table.name}.num_embeddings", f"must be >= 2 with data={cfg.data.kind} "
                               f"(row 0 is for missing values), got {table.num_embeddings}"))
    return out


def _tabular_problems(cfg: Any) -> list[Any]:
    from omegaconf import OmegaConf

    from recframe.config.compose import Problem
    from recframe.data.report import DataError
    from recframe.data.tabular import FORMATS, read_header

    data, out = cfg.data, []
    if data.format not in FORMATS:
        return [*out, Problem("data.format", f"unknown format {data.format!r}", f"choose one of {list(FORMATS)}")]
    try:
        spec = tabular_spec(cfg)
    except DataError as error:
        return [Problem("data.spec", str(error))]
    names = {"dense": [d.feature for d in spec.dense], "sparse": [s.feature for s in spec.sparse]}
    if data.spec is not None:
        for kind in ("dense", "sparse"):
            if list(cfg.features[kind]) != names[kind]:
                out.append(Problem(f"features.{kind}", f"{list(cfg.features[kind])} differ from the {kind} features "
                                   f"of the spec {data.spec}: {names[kind]}",
                                   "take them from the spec: features=from_spec tables=from_spec"))
    if not OmegaConf.is_missing(data, "path") and Path(data.path).is_file():
        try:
            header = read_header(data.path, data.delimiter, data.format)
        except ImportError as error:
            return [*out, Problem("data.path", str(error))]
        wanted = {"data.label": [spec.label], "features.dense": [d.column for d in spec.dense],
                  "features.sparse": [s.column for s in spec.sparse]}
        if data.spec is not None:  # the spec names every column
            wanted = {"data.spec": [c for columns in wanted.values() for c in columns]}
        for key, columns in wanted.items():
            absent = [c for c in columns if c not in header]
            if absent:
                hint = "map a feature to a column with data.columns.<feature>=<column>" if data.spec is None \
                    else f"fix the columns named in {data.spec}"
                out.append(Problem(key, f"{data.path} has no columns {absent}", f"its columns: {header}; {hint}"))
    if data.dense_transform not in ("none", "log1p"):
        out.append(Problem("data.dense_transform", f"unknown transform {data.dense_transform!r}",
                           "choose none or log1p"))
    if data.id_mapping not in ("modulo", "vocab"):
        out.append(Problem("data.id_mapping", f"unknown mapping {data.id_mapping!r}", "choose modulo or vocab"))
    if data.on_error not in ("skip", "error"):
        out.append(Problem("data.on_error", f"unknown policy {data.on_error!r}", "choose skip or error"))
    if data.vocab_threshold < 1 or data.max_reported_errors < 0:
        out.append(Problem("data", "vocab_threshold must be >= 1 and max_reported_errors >= 0"))
    return out + _table_problems(cfg)


def tabular_spec(cfg: Any) -> Any:
    """The ``FeatureSpec`` of a ``data=tabular`` run: ``data.spec``'s file, or the features config.

    Args:
        cfg: the composed run config.
    """
    from recframe.data.spec import SpecDefaults, load_spec, spec_from_config

    data = cfg.data
    defaults = SpecDefaults(label=data.label, positive_threshold=data.positive_threshold,
                            dense_transform=data.dense_transform, id_mapping=data.id_mapping,
                            vocab_threshold=data.vocab_threshold, multi_value_separator=data.multi_value_separator)
    if data.spec is not None:
        return load_spec(data.spec, defaults)
    return spec_from_config(list(cfg.features.dense), list(cfg.features.sparse), dict(data.columns), defaults)


def _movielens_problems(cfg: Any) -> list[Any]:
    from omegaconf import OmegaConf

    from recframe.config.compose import Problem
    from recframe.data.movielens import DENSE_FEATURES, SPARSE_FEATURES, SPLITS, missing_features
    from recframe.data.movielens_files import detect_layout
    from recframe.data.movielens_retrieval import ITEM_FEATURES, USER_FEATURES
    from recframe.data.report import DataError

    data, out = cfg.data, []
    retrieval = data.kind == "movielens_retrieval"
    known = {"dense": () if retrieval else DENSE_FEATURES,
             "sparse": USER_FEATURES + ITEM_FEATURES if retrieval else SPARSE_FEATURES}
    for kind, names in (("dense", cfg.features.dense), ("sparse", cfg.features.sparse)):
        unknown = [n for n in names if n not in known[kind]]
        if unknown:
            out.append(Problem(f"features.{kind}", f"data={data.kind} has no {kind} features {unknown}",
                               f"choose from {list(known[kind])}"))
    layout = None
    if not OmegaConf.is_missing(data, "path"):
        try:
            layout = detect_layout(data.path)
        except DataError as error:
            out.append(Problem("data.path", str(error)))
    absent = missing_features(layout or "", [*cfg.features.dense, *cfg.features.sparse])
    if absent:
        hint = ("use features=movielens_latest_retrieval tables=movielens_latest_retrieval "
                "'model.user_features=[user_id,user_history]'") if retrieval else \
            "use features=movielens_latest tables=movielens_latest"
        out.append(Problem("features", f"{data.path} ({layout} layout) has no user attributes, so no features "
                           f"{absent}", hint))
    if retrieval and data.history_length < 1:
        out.append(Problem("data.history_length", f"must be >= 1, got {data.history_length}"))
    if not retrieval:
        if data.split not in SPLITS:
            out.append(Problem("data.split", f"unknown split {data.split!r}", "choose u1..u5, ua, ub or time"))
        elif data.split != "time" and layout not in (None, "100k"):
            out.append(Problem("data.split", f"split {data.split} is one of GroupLens's 100K split files; "
                               f"{data.path} has the {layout} layout", "use data.split=time"))
        if not 0.0 < data.val_fraction < 1.0:
            out.append(Problem("data.val_fraction", f"must be in (0, 1), got {data.val_fraction}"))
        if not 0.5 <= data.positive_rating <= 5:
            out.append(Problem("data.positive_rating", f"must be in 0.5..5, got {data.positive_rating}"))
    if data.vocab_threshold < 1 or data.zip_prefix < 1:
        out.append(Problem("data", "vocab_threshold and zip_prefix must be >= 1"))
    return out + _table_problems(cfg)

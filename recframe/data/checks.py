"""Checks of a run config's file data source (``data.kind`` with a ``data.path``): its settings and its files.

What only the data can say: the path exists, a preprocessed directory has its
``feature_map.json`` and matches the features, bag sizes and table sizes of the config, a table
file has the columns the spec names, a MovieLens directory's layout has the features asked for;
and the values of each file source's own settings. Checks that need no data are
``recframe.config.validate``'s; the application gathers both (``recframe.training.checks``), so
every problem is listed at once. The data modules are imported by the check of their kind only:
checking a synthetic config reads nothing.

Example:
    >>> from recframe.config.compose import compose_config
    >>> data_source_problems(compose_config(["+experiment=dlrm"]))  # synthetic: nothing to read
    []
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recframe import storage
from recframe.config.problems import Problem
from recframe.config.resolve import table_configs
from recframe.data.report import DataError
from recframe.data.spec import tabular_spec
from recframe.vocab import TableFormat

FILE_KINDS = ("criteo_tsv", "criteo_binary", "criteo_multihot", "movielens", "movielens_retrieval",
              "tabular")  # kinds with data.path
SPLIT_FILE_KINDS = ("criteo_tsv", "criteo_binary", "tabular")  # kinds with data.val_path and data.test_path


def data_source_problems(cfg: DictConfig) -> list[Problem]:
    """Problems of a file data source (``data.kind`` in ``FILE_KINDS``) against its files; none for synthetic data.

    Args:
        cfg: the composed run config.

    Example:
        >>> from recframe.config.compose import compose_config
        >>> [p.key for p in data_source_problems(compose_config(["data=criteo_tsv"]))]
        ['data.path']
    """
    data = cfg.data
    if data.kind not in FILE_KINDS:
        return []
    out: list[Problem] = []
    if OmegaConf.is_missing(data, "path"):
        example = {"criteo_tsv": "/path/to/train.txt", "criteo_binary": "/path/to/preprocessed_dir",
                   "criteo_multihot": "/path/to/multihot_dir", "movielens": "/path/to/ml-100k",
                   "movielens_retrieval": "/path/to/ml-100k", "tabular": "/path/to/table.csv"}[data.kind]
        noun = "file" if data.kind in ("criteo_tsv", "tabular") else "directory"
        out.append(Problem("data.path", "is not set", f"give the {noun}: data.path={example}"))
    elif data.kind == "criteo_binary" and (problem := _feature_map_problem(data.path)):
        out.append(Problem("data.path", problem,
                           f"make it with: recframe preprocess criteo --input FILE... --output {data.path}"))
    elif data.kind in ("criteo_tsv", "tabular") and (problem := storage.file_problem(data.path)):
        out.append(Problem("data.path", problem, "check the path (or URL); relative paths start from where "
                           "recframe runs"))
    out += _split_file_problems(cfg)
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


def _feature_map_problem(directory: str) -> str | None:
    """Why ``directory`` (a local path or a URL) is not a preprocessed directory; None when it has its feature map."""
    problem = storage.file_problem(storage.join(storage.location(directory), "feature_map.json"))
    if problem is None or storage.is_url(directory):
        return problem  # a URL's: no such file, or the store cannot be reached
    return f"{directory} has no feature_map.json (from {Path.cwd()})"


def _split_file_problems(cfg: DictConfig) -> list[Problem]:
    """``data.val_path`` and ``data.test_path`` (tabular, Criteo TSV and binary): files (directories) that exist."""
    out, data = [], cfg.data
    for key in ("val_path", "test_path"):
        path = data[key] if data.kind in SPLIT_FILE_KINDS else None  # other kinds have no such key
        if path is None:
            continue
        if data.kind == "criteo_binary" and (problem := _feature_map_problem(path)):
            out.append(Problem(f"data.{key}", problem,
                               f"make it with: recframe preprocess criteo --input FILE... --output {path}"))
        elif data.kind != "criteo_binary" and (problem := storage.file_problem(path)):
            out.append(Problem(f"data.{key}", problem, "check the path (or URL); relative paths start from where "
                               "recframe runs"))
    return out


def _multihot_problems(cfg: DictConfig) -> list[Problem]:
    """``criteo_multihot``: the directory's feature counts, bag sizes and table sizes against the config."""
    from recframe.data.multihot import load_multihot_feature_map

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


def _table_problems(cfg: DictConfig) -> list[Problem]:
    """Every table has room for row 0 (missing values) and one more."""

    out = []
    for table in table_configs(cfg):
        if table.num_embeddings < 2:
            out.append(Problem(f"tables.specs.{table.name}.num_embeddings", f"must be >= 2 with data={cfg.data.kind} "
                               f"(row 0 is for missing values), got {table.num_embeddings}"))
    return out


def _tabular_problems(cfg: DictConfig) -> list[Problem]:
    """``tabular``: the spec (or the features config) against the file's columns; the settings' values."""
    from recframe.data.tabular import read_header, table_format

    data, out = cfg.data, []
    if data.format not in TableFormat.choices():
        return [Problem("data.format", f"unknown format {data.format!r}", f"choose one of {TableFormat.choices()}")]
    try:
        spec = tabular_spec(cfg)
    except DataError as error:
        return [Problem("data.spec", str(error))]
    out += _task_problems(cfg, list(spec.labels))
    if not OmegaConf.is_missing(data, "path") and table_format(data.path, data.format) == TableFormat.libsvm and \
            len(spec.labels) != 1:
        out.append(Problem("data.spec" if data.spec is not None else "data.label", f"{len(spec.labels)} label "
                           f"columns {list(spec.labels)}, but a libsvm line has one label", "name one label column"))
    names = {"dense": [d.feature for d in spec.dense], "sparse": [s.feature for s in spec.sparse]}
    if data.spec is not None:
        for kind in ("dense", "sparse"):
            if list(cfg.features[kind]) != names[kind]:
                out.append(Problem(f"features.{kind}", f"{list(cfg.features[kind])} differ from the {kind} features "
                                   f"of the spec {data.spec}: {names[kind]}",
                                   "take them from the spec: features=from_spec tables=from_spec"))
    if not OmegaConf.is_missing(data, "path") and storage.file_problem(data.path) is None:
        try:
            header = read_header(data.path, data.delimiter, data.format)
        except (ImportError, DataError) as error:  # no pyarrow; a header that is not text
            return [*out, Problem("data.path", str(error))]
        wanted = {"data.label": list(spec.labels), "features.dense": [d.column for d in spec.dense],
                  "features.sparse": [s.column for s in spec.sparse]}
        if data.spec is not None:  # the spec names every column
            wanted = {"data.spec": [c for columns in wanted.values() for c in columns]}
        for key, columns in wanted.items():
            absent = [c for c in columns if header is not None and c not in header]  # libsvm: None, its reader checks
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


def _task_problems(cfg: DictConfig, labels: list[str]) -> list[Problem]:
    """A CTR model has one task per label column of the table (a retrieval model has no tasks: the config's check)."""
    if "tasks" not in cfg.model:
        return []
    try:
        names = [str(t.name) for t in cfg.model.tasks]
    except Exception as error:  # an interpolation of the tasks that does not resolve: config's check reports it
        return [Problem("model.tasks", str(error).splitlines()[0])]
    if len(names) == len(labels):
        return []
    source = f"the feature spec {cfg.data.spec}" if cfg.data.spec is not None else "data.label"
    return [Problem("model.tasks", f"{len(names)} tasks {names}, but the table has {len(labels)} label column(s) "
                    f"{labels} ({source}); a task is learned from each label column, in order",
                    "take the tasks from the spec (configs/model_for_data/tabular_<model>.yaml does: "
                    "tasks: ${feature_spec:${data.spec},tasks,${data.label}}), or list the label columns in the "
                    "spec: label: [click, purchase]")]


def _movielens_problems(cfg: DictConfig) -> list[Problem]:
    """``movielens*``: the features against the directory's layout; the split and the settings' values."""
    from recframe.data.movielens import DENSE_FEATURES, SPARSE_FEATURES, SPLITS, missing_features
    from recframe.data.movielens_files import detect_layout
    from recframe.data.movielens_retrieval import ITEM_FEATURES, USER_FEATURES

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

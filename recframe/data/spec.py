"""A feature spec: what each column of a CSV or Parquet table is, for data kind ``tabular``.

A run gets its spec from a YAML file (``data.spec=FILE``) or, without one, from the config (the
features config names the columns, ``data.columns`` renames them, ``data.*`` gives the settings).
In the file, every setting left out (or null) takes the value of the ``data.*`` key of the same
meaning, so a spec lists only what differs. The file, with every key::

    label: click               # the label column (null: data.label), or a list of them: [click, purchase]
    positive_threshold: null   # label = value >= this, e.g. 4 for ratings (null: data.positive_threshold)
    dense:                     # dense features: feature name -> settings ({}: all defaults)
      price: {column: Price, transform: log1p}   # column (null: the feature's name); none | log1p
    categorical:               # sparse features, one embedding table each (t_<feature>)
      user: {dtype: int, mapping: vocab, vocab_threshold: 2, rows: 100000}
      site: {dtype: hex}       # string (hashed text) | int (decimal) | hex (e.g. Criteo's C1..C26)
      tags: {separator: "|", rows: 1000, max_values: 64}  # multi-hot: a field holds several values

``mapping`` is modulo or vocab (``recframe.data.categorical``); ``rows`` is the table's size
(null: ``tables.num_embeddings``). ``max_values`` (default 64) is the most values a field of the feature may
hold: a row with more is malformed (``long_bag``: skipped and counted, or an error), since every bag of the
table is padded to the longest one kept. Experiment ``tabular`` takes its features and tables from the
spec (``features=from_spec``, ``tables=from_spec`` read it through the ``${feature_spec:FILE,KEY}``
resolver), and the models' tasks too: one task per label column, named after it, in the spec's order
(``configs/model_for_data/tabular_<model>.yaml``).

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "spec.yaml"
    >>> _ = path.write_text("label: y\\ndense: {x: {}}\\ncategorical: {c: {dtype: hex, rows: 50}}\\n")
    >>> spec = load_spec(path, SpecDefaults())
    >>> spec.label, [d.column for d in spec.dense], spec.sparse[0].dtype, spec.sparse[0].rows
    ('y', ['x'], 'hex', 50)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recframe import storage
from recframe.data.report import DataError
from recframe.vocab import DenseTransform, IdMapping

DTYPES = ("string", "int", "hex")  # how a categorical field's text becomes a 64-bit value


@dataclass
class DenseColumnSpec:
    """A dense feature in a spec file."""

    column: str | None = None  # the column it reads (null: the feature's name)
    transform: str | None = None  # none | log1p (log(1 + max(x, 0))) (null: data.dense_transform)


@dataclass
class CategoricalColumnSpec:
    """A sparse (categorical or multi-hot) feature in a spec file."""

    column: str | None = None  # the column it reads (null: the feature's name)
    dtype: str = "string"  # string (stable hash of the text) | int (decimal integer) | hex (hexadecimal integer)
    mapping: str | None = None  # value -> table row: modulo | vocab (null: data.id_mapping)
    vocab_threshold: int | None = None  # vocab: minimum count in the training rows (null: data.vocab_threshold)
    rows: int | None = None  # rows of its table t_<feature> (null: tables.num_embeddings)
    separator: str | None = None  # multi-hot: splits a field into values ("": one value; null: data's)
    max_values: int = 64  # the most values a field may hold; a row with more is malformed (long_bag)


@dataclass
class SpecFile:
    """The schema of a feature spec YAML file (see the module docstring)."""

    label: Any = None  # the label column, or a list of them (one task each); null: data.label
    positive_threshold: float | None = None  # label = value >= this (null: data.positive_threshold)
    dense: dict[str, DenseColumnSpec] = field(default_factory=dict)  # feature -> settings
    categorical: dict[str, CategoricalColumnSpec] = field(default_factory=dict)  # feature -> settings


@dataclass(frozen=True)
class SpecDefaults:
    """The ``data.*`` settings a spec falls back on (and the whole spec when there is no file).

    Args:
        label: the label column.
        positive_threshold: label = value >= it (None: 0/1 labels).
        dense_transform: ``none`` or ``log1p``.
        id_mapping: ``modulo`` or ``vocab``.
        vocab_threshold: vocab: minimum count for a row of its own.
        multi_value_separator: splits categorical fields ("": one value per field).
    """

    label: str = "label"
    positive_threshold: float | None = None
    dense_transform: DenseTransform = DenseTransform.log1p
    id_mapping: IdMapping = IdMapping.modulo
    vocab_threshold: int = 1
    multi_value_separator: str = ""


@dataclass(frozen=True)
class DenseColumn:
    """A dense feature: ``feature`` reads ``column`` through ``transform``."""

    feature: str
    column: str
    transform: str


@dataclass(frozen=True)
class SparseColumn:
    """A sparse feature: ``feature`` reads ``column``; ``rows`` None means the table config decides."""

    feature: str
    column: str
    dtype: str
    mapping: str
    vocab_threshold: int
    separator: str
    rows: int | None = None
    max_values: int = 64  # a row with more values in this field is malformed (long_bag)


@dataclass(frozen=True)
class FeatureSpec:
    """Every column a tabular source reads, with its settings filled in.

    Args:
        labels: the label columns (one per task), in order.
        positive_threshold: label = value >= it (None: the column holds 0 or 1).
        dense: dense features, in order.
        sparse: sparse features, in KJT key order.
    """

    labels: tuple[str, ...]
    positive_threshold: float | None
    dense: tuple[DenseColumn, ...]
    sparse: tuple[SparseColumn, ...]

    @property
    def label(self) -> str:
        """The first label column (the only one of a one-task table)."""
        return self.labels[0]

    def problems(self) -> list[str]:
        """What is wrong with the settings (empty when fine)."""
        out = [p for d in self.dense if (p := DenseTransform.problem(f"dense.{d.feature}.transform:", d.transform))]
        for s in self.sparse:
            if s.dtype not in DTYPES:
                out.append(f"categorical.{s.feature}.dtype: {s.dtype!r} is not one of {list(DTYPES)}")
            if problem := IdMapping.problem(f"categorical.{s.feature}.mapping:", s.mapping):
                out.append(problem)
            if s.vocab_threshold < 1:
                out.append(f"categorical.{s.feature}.vocab_threshold: must be >= 1, got {s.vocab_threshold}")
            if s.max_values < 1:
                out.append(f"categorical.{s.feature}.max_values: must be >= 1, got {s.max_values}")
            if s.rows is not None and s.rows < 2:
                out.append(f"categorical.{s.feature}.rows: must be >= 2 (row 0 is for missing values), got {s.rows}")
        names = [d.feature for d in self.dense] + [s.feature for s in self.sparse]
        twice = sorted({n for n in names if names.count(n) > 1})
        out += [f"feature {n!r} is both dense and categorical" for n in twice]
        if not self.labels or len(set(self.labels)) != len(self.labels):
            out.append(f"label: give one label column or a list of distinct ones, got {list(self.labels)}")
        return out


def spec_from_config(dense: list[str], sparse: list[str], columns: dict[str, str],
                     defaults: SpecDefaults) -> FeatureSpec:
    """The spec of a run without a spec file: the features config names the columns (text values hashed).

    Args:
        dense: dense feature names (each reads the column of its name, or ``columns[name]``).
        sparse: sparse feature names.
        columns: feature -> column where they differ.
        defaults: the ``data.*`` settings.
    """
    return FeatureSpec(
        labels=(defaults.label,), positive_threshold=defaults.positive_threshold,
        dense=tuple(DenseColumn(n, columns.get(n, n), defaults.dense_transform) for n in dense),
        sparse=tuple(SparseColumn(n, columns.get(n, n), "string", defaults.id_mapping, defaults.vocab_threshold,
                                  defaults.multi_value_separator) for n in sparse),
    )


def read_spec_file(path: str | Path) -> Any:
    """A spec file checked against ``SpecFile`` (a DictConfig); DataError naming the file and key if it is not one."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = storage.location(path)  # a local path or an fsspec URL
    if problem := storage.file_problem(path):
        raise DataError(f"feature spec {path}: {problem}; give the YAML file that describes the columns: "
                        "data.spec=FILE")
    try:
        loaded = OmegaConf.load(path if isinstance(path, Path) else io.StringIO(storage.read_text(path)))
    except yaml.MarkedYAMLError as error:  # a YAML syntax error: its line and column
        mark, start = error.problem_mark, error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        context = f" ({error.context} from line {start.line + 1})" if error.context and start is not None else ""
        raise DataError(f"feature spec {where}: {error.problem}{context}: fix the YAML (recframe/data/spec.py "
                        "shows the format)") from None
    except (yaml.YAMLError, ValueError) as error:  # ValueError: not UTF-8 text
        raise DataError(f"feature spec {path}: not a YAML text file ({str(error).splitlines()[0]})") from None
    try:
        return OmegaConf.merge(OmegaConf.structured(SpecFile), loaded)
    except (OmegaConfBaseException, ValueError) as error:  # YAML syntax (ValueError) or a key/type problem
        first = str(error).strip().splitlines()[0]
        raise DataError(f"feature spec {path}: {first}; its keys are label, positive_threshold, dense "
                        f"(column, transform) and categorical (column, dtype, mapping, vocab_threshold, rows, "
                        "separator, max_values): see recframe/data/spec.py") from None


def label_columns(label: Any, default: str) -> tuple[str, ...]:
    """The label columns of a spec file's ``label`` (a name, a list of names, or null: ``default``).

    Example:
        >>> label_columns(None, "click"), label_columns(["click", "buy"], "label")
        (('click',), ('click', 'buy'))
    """
    if label is None:
        return (default,)
    if isinstance(label, str):
        return (label,)
    return tuple(str(name) for name in label)


def load_spec(path: str | Path, defaults: SpecDefaults) -> FeatureSpec:
    """The spec of ``path`` with unset settings from ``defaults``; DataError naming the file if it is wrong.

    Args:
        path: the YAML spec file.
        defaults: the ``data.*`` settings.
    """
    raw = read_spec_file(path)

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    spec = FeatureSpec(
        labels=label_columns(raw.label, defaults.label),
        positive_threshold=pick(raw.positive_threshold, defaults.positive_threshold),
        dense=tuple(DenseColumn(str(n), pick(d.column, str(n)), pick(d.transform, defaults.dense_transform))
                    for n, d in raw.dense.items()),
        sparse=tuple(SparseColumn(str(n), pick(c.column, str(n)), c.dtype, pick(c.mapping, defaults.id_mapping),
                                  pick(c.vocab_threshold, defaults.vocab_threshold),
                                  pick(c.separator, defaults.multi_value_separator), c.rows, c.max_values)
                     for n, c in raw.categorical.items()),
    )
    problems = spec.problems()
    if problems:
        raise DataError(f"feature spec {path}: " + "; ".join(problems))
    return spec


def tabular_spec(cfg: Any) -> FeatureSpec:
    """The ``FeatureSpec`` of a ``data=tabular`` run: ``data.spec``'s file, or the features config.

    Args:
        cfg: the composed run config (``data``: the tabular settings; ``features``: the names).

    Example:
        >>> from omegaconf import OmegaConf
        >>> from recframe.config.data import TabularDataConfig
        >>> cfg = OmegaConf.create({"data": OmegaConf.structured(TabularDataConfig(path="t.csv")),
        ...                         "features": {"dense": ["x"], "sparse": ["c"]}})
        >>> spec = tabular_spec(cfg)
        >>> spec.label, [d.column for d in spec.dense], [s.column for s in spec.sparse]
        ('label', ['x'], ['c'])
    """
    data = cfg.data
    defaults = SpecDefaults(label=data.label, positive_threshold=data.positive_threshold,
                            dense_transform=data.dense_transform, id_mapping=data.id_mapping,
                            vocab_threshold=data.vocab_threshold, multi_value_separator=data.multi_value_separator)
    if data.spec is not None:
        return load_spec(data.spec, defaults)
    return spec_from_config(list(cfg.features.dense), list(cfg.features.sparse), dict(data.columns), defaults)


def _tasks(labels: Sequence[str]) -> Any:
    """The ``model.tasks`` of these label columns: typed ``TaskConfig`` nodes, so that an experiment's own task
    list merges over them."""
    from omegaconf import OmegaConf

    from recframe.models.zoo import TaskConfig

    return OmegaConf.create([OmegaConf.structured(TaskConfig(name=name)) for name in labels])


def feature_spec_value(path: str | None, key: str, label: str = "label") -> Any:
    """``${feature_spec:FILE,KEY}`` in configs: ``dense`` / ``sparse`` (feature names), ``tables`` (table specs)
    or ``tasks`` (``${feature_spec:FILE,tasks,${data.label}}``: one task per label column).

    Args:
        path: the spec file (``${data.spec}``).
        key: ``dense``, ``sparse``, ``tables`` (one table ``t_<feature>`` per categorical feature) or ``tasks``
            (``{name: <label column>, weight: 1.0}`` for each label column of the spec).
        label: the label column when the spec names none (``data.label``).
    """
    from omegaconf import OmegaConf

    if path is None and key == "tasks":  # a table without a spec file: its one label column, data.label
        return _tasks([label])
    if path is None:
        raise DataError("data.spec is not set: give the feature spec YAML file of the table, data.spec=FILE "
                        "(see recframe/data/spec.py)")
    raw = read_spec_file(path)
    if key == "dense":
        return [str(n) for n in raw.dense]
    if key == "sparse":
        return [str(n) for n in raw.categorical]
    if key == "tables":
        return OmegaConf.create({f"t_{n}": {"features": [str(n)], "num_embeddings": c.rows, "embedding_dim": None,
                                            "pooling": "sum"} for n, c in raw.categorical.items()})
    if key == "tasks":
        return _tasks(label_columns(raw.label, label))
    raise KeyError(f"${{feature_spec:FILE,KEY}}: KEY is dense, sparse, tables or tasks, got {key!r}")

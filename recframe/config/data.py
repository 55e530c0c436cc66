"""Schemas of the ``data`` config group: one per data source (``data.kind``).

Pure data: the checks of a data source against its files are ``recframe.data.checks``'s, and the
resolvers that read sizes from data files (``${feature_map:DIR,key}``) ``recframe.data.resolvers``'s.

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(SyntheticDataConfig)
    >>> cfg.kind, cfg.generate_on
    ('synthetic', 'auto')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from recframe.vocab import DenseTransform, GenerateOn, IdMapping, OnError, TableFormat


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
    val_path: str | None = None  # a validation file of its own (then val_fraction is unused); None: val_fraction
    test_path: str | None = None  # a test file, evaluated once after training (test/* in metrics.json); None: none
    shuffle: bool = True  # shuffle the training rows every epoch (False: file order)
    seed: int = 1234  # seed of the per-epoch shuffles
    id_mapping: IdMapping = IdMapping.modulo  # value -> table row: modulo (1 + v % (rows-1)) | vocab (by count)
    vocab_threshold: int = 1  # vocab: values seen fewer times in the training rows share the out-of-vocabulary row 1
    on_error: OnError = OnError.skip  # malformed lines: skip (count per kind, log the first) | error (stop)
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
    val_path: str | None = None  # a validation directory, preprocessed like path (its ids must mean the same)
    test_path: str | None = None  # a test directory, evaluated once after training (test/* in metrics.json)
    shuffle: bool = True  # shuffle the training rows every epoch (False: input order)
    seed: int = 1234  # seed of the per-epoch shuffles
    id_mapping: IdMapping = IdMapping.modulo  # as the directory was made: modulo (raw, --hash-size) | vocab
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
    path: str = MISSING  # the CSV file (first row: column names), Parquet or libsvm file
    spec: str | None = None  # feature spec YAML file: label, dense and categorical columns (None: the features config)
    format: TableFormat = TableFormat.auto  # auto (by suffix: .parquet/.pq, .libsvm/.svm/.ffm, else CSV) | csv
    # | parquet | libsvm (lines of label field:id:value ... or label key:value ...: recframe/data/tabular.py)
    batch_size: int = 256  # samples per batch per rank
    num_workers: int = 0  # DataLoader worker processes (started per epoch)
    pin_memory: bool = False  # page-locked batches (useful with GPUs)
    label: str = "label"  # the label column: 0/1, or a number compared with positive_threshold
    positive_threshold: float | None = None  # label = value >= this (e.g. 4 for ratings); None: the column is 0/1
    columns: dict[str, str] = field(default_factory=dict)  # feature name -> column name where they differ
    delimiter: str = ","  # field separator
    dense_transform: DenseTransform = DenseTransform.log1p  # dense columns: none | log1p (log(1 + max(x, 0)))
    multi_value_separator: str = ""  # splits categorical fields into bags of ids, e.g. "|" ("": one id per field)
    id_mapping: IdMapping = IdMapping.modulo  # value -> table row: modulo (1 + hash % (rows-1)) | vocab (by count)
    vocab_threshold: int = 1  # vocab: values seen fewer times in the training rows share the out-of-vocabulary row 1
    val_fraction: float = 0.1  # the last fraction of valid rows (file order) is the validation set
    val_path: str | None = None  # a validation file of its own (then val_fraction is unused); None: val_fraction
    test_path: str | None = None  # a test file, evaluated once after training (test/* in metrics.json); None: none
    shuffle: bool = True  # shuffle the training rows every epoch
    seed: int = 1234  # seed of the per-epoch shuffles
    on_error: OnError = OnError.skip  # malformed rows: skip (count per kind, log the first) | error (stop at the first)
    max_reported_errors: int = 5  # malformed rows described (file:line: column) per kind in the log

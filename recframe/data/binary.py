"""recframe's binary columnar layout for Criteo data, and the ``criteo_binary`` data source.

A directory written by ``recframe preprocess criteo`` holds, with ``N`` valid rows in input order:

- ``dense.npy``: float32 ``[N, 13]``, ``log(1 + max(x, 0))`` (missing as 0).
- ``sparse.npy``: ``[N, 26]`` categorical ids, as ``feature_map.json``'s ``id_mode`` says:
  ``vocab`` (int32: 0 missing, 1 out of vocabulary, 2.. by decreasing count), ``hash`` (int32:
  ``1 + v % (hash_size - 1)``, 0 missing) or ``raw`` (int64: the value's low 63 bits, -1 missing;
  ``criteo_binary`` hashes them by modulo of each table's size when it reads a batch).
- ``labels.npy``: uint8 ``[N]`` (absent for files without labels).
- ``vocab.npz`` (``vocab`` mode): per feature ``C<i>_values`` (sorted) and ``C<i>_ids``, to map more data.
- ``feature_map.json``: rows, id mode, rows each table needs (``num_embeddings``), distinct values
  seen per feature, skipped lines per kind, the inputs. Configs can refer to it:
  ``num_embeddings: ${feature_map:${data.path},num_embeddings.C1}``.

``CriteoBinarySource`` reads the arrays with ``np.load(mmap_mode="r")``: a rank touches only the
pages of its own rows. With ``shuffle_batches`` (or without shuffling) every batch is a contiguous
slice of the rows, read as one block per array (no gather); shuffling rows gathers each batch's
rows by index (``recframe.data.arrays``). Vocab ids past a table's size go to the out-of-vocabulary row (they are
ordered by count, so the table keeps the most frequent values), as with ``criteo_tsv``.

Example:
    >>> source = CriteoBinarySource("criteo_bin/", keys=[f"cat_{i}" for i in range(26)], table_rows=[1000] * 26,
    ...                             batch_size=2048, val_fraction=0.1)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from recframe import storage
from recframe.config.resolve import feature_rows
from recframe.data.arrays import Columns
from recframe.data.categorical import MISSING_ID, OOV_ID
from recframe.data.criteo import KINDS, NUM_SPARSE, SPARSE_NAMES
from recframe.data.in_memory import InMemorySource
from recframe.data.report import DataError, SkipReport
from recframe.data.source import DATA_SOURCES
from recframe.storage_cache import local_copy
from recframe.vocab import IdMapping

FORMAT = "recframe.criteo_binary"
VERSION = 1
FEATURE_MAP = "feature_map.json"
_HEADER_BYTES = 128  # room for any shape: the header is rewritten in place once the row count is known


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(shape)}).encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10) + text.ljust(_HEADER_BYTES - 11) + b"\n"


class NpyAppender:
    """Writes a ``.npy`` file row block by row block, without knowing the row count in advance.

    Args:
        path: the file.
        dtype: element type.
        row_shape: shape of one row (``()`` for a vector).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "x.npy"
        >>> with NpyAppender(path, np.float32, (2,)) as out:
        ...     out.append(np.ones((3, 2))); out.append(np.zeros((1, 2)))
        >>> np.load(path, mmap_mode="r").shape
        (4, 2)
    """

    def __init__(self, path: str | os.PathLike, dtype: type | np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._file = self.path.open("wb")
        self._file.write(_npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        self._file.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self._file.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=16)
def _read_feature_map(path: str, stamp: str) -> dict[str, Any]:
    return json.loads(storage.read_text(storage.location(path)))


def load_feature_map(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``feature_map.json`` of a preprocessed directory, a local path or a URL (raises DataError naming the fix
    if absent); read again only when the file changed."""
    path = storage.join(storage.location(directory), FEATURE_MAP)
    try:
        stamp = storage.stamp(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; make the directory with: recframe preprocess criteo --input FILE... "
                        f"--output {directory}") from None
    feature_map = _read_feature_map(str(path), stamp)
    if feature_map.get("format") != FORMAT or feature_map.get("version") != VERSION:
        raise DataError(f"{path}: not a {FORMAT} version {VERSION} feature map; preprocess the data again")
    return feature_map


def feature_map_value(directory: str, key: str) -> Any:
    """``${feature_map:DIR,a.b}``: the value at the dotted ``key`` of DIR's ``feature_map.json``."""
    node: Any = load_feature_map(directory)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{storage.join(storage.location(directory), FEATURE_MAP)} has no {key!r}")
        node = node[part]
    return node


def _vocab_bytes(directory: str | os.PathLike) -> bytes:
    """The bytes of a vocab-mode directory's ``vocab.npz`` (two directories share a vocabulary when they are equal)."""
    return (Path(directory) / "vocab.npz").read_bytes()


def open_columns(directory: str | os.PathLike) -> tuple[Columns, dict[str, Any]]:
    """Memory-mapped columns of a preprocessed directory, and its feature map."""
    feature_map = load_feature_map(directory)
    if not feature_map["has_label"]:
        raise DataError(f"{directory}: was preprocessed without labels (--no-label); training needs labels")
    d = Path(directory)
    columns = Columns(dense=np.load(d / "dense.npy", mmap_mode="r"), ids=np.load(d / "sparse.npy", mmap_mode="r"),
                      labels=np.load(d / "labels.npy", mmap_mode="r"))
    if not len(columns.dense) == len(columns.ids) == len(columns) == feature_map["rows"]:
        raise DataError(f"{directory}: dense/sparse/labels rows differ from feature_map.json's {feature_map['rows']}; "
                        "the directory is incomplete: preprocess the data again")
    return columns, feature_map


class TableRows:
    """Maps stored ids to table rows at batch time (picklable, for DataLoader workers).

    Args:
        id_mode: ``raw`` (modulo of each table's rows), ``vocab`` (ids past a table go to row 1) or ``hash``.
        table_rows: rows of each feature's table.
    """

    def __init__(self, id_mode: str, table_rows: list[int]) -> None:
        self.id_mode = id_mode
        self.rows = np.asarray(table_rows, dtype=np.int64)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = ids.astype(np.int64, copy=False)
        if self.id_mode == "raw":
            out = ids % (self.rows - 1) + 1
            return np.where(ids < 0, MISSING_ID, out)
        return np.where(ids >= self.rows, OOV_ID, ids)


class CriteoBinarySource(InMemorySource):
    """A preprocessed Criteo directory, memory-mapped; the last ``val_fraction`` of rows validate.

    Args:
        path: the directory written by ``recframe preprocess criteo`` (a local path or an fsspec URL).
        keys: names of the 26 sparse features (KJT keys), in column order.
        table_rows: rows of the table behind each key.
        batch_size: samples per batch per rank.
        val_fraction: the last fraction of rows (input order) used for validation.
        shuffle: shuffle the training rows every epoch.
        seed: seed of the shuffles.
        id_mapping: what the config expects (``modulo`` or ``vocab``): checked against the directory.
        vocab_threshold: ``vocab``: the threshold the directory must have been made with.
        shuffle_batches: shuffle permutes the order of contiguous batches instead of the rows (slices, no gather).
        pin_memory: write batches into page-locked memory (with CUDA, in the main process).
        val_path: a directory of validation rows, preprocessed like ``path`` (None: the last ``val_fraction``).
        test_path: a directory of test rows, evaluated once after training (None: none).
        cache_dir: where directories at URLs are copied to be memory-mapped (``recframe.storage_cache``; None:
            its default).
    """

    def __init__(self, path: str, keys: list[str], table_rows: list[int], batch_size: int, val_fraction: float = 0.1,
                 shuffle: bool = True, seed: int = 0, id_mapping: str = "modulo", vocab_threshold: int = 1,
                 shuffle_batches: bool = False, pin_memory: bool = False, val_path: str | None = None,
                 test_path: str | None = None, cache_dir: str | None = None) -> None:
        if len(keys) != NUM_SPARSE or len(table_rows) != NUM_SPARSE:
            raise ValueError(f"CriteoBinarySource: Criteo has {NUM_SPARSE} categorical features, got {len(keys)} keys "
                             f"and {len(table_rows)} table sizes")
        self.path, self.keys, self.table_rows = path, list(keys), [int(r) for r in table_rows]
        self.batch_size, self.val_fraction, self.shuffle, self.seed = batch_size, val_fraction, shuffle, seed
        self.id_mapping, self.vocab_threshold = id_mapping, vocab_threshold
        self.shuffle_batches, self.pin_memory = shuffle_batches, pin_memory
        self.val_path, self.test_path, self.cache_dir = val_path, test_path, cache_dir
        self.columns: Columns | None = None
        self.feature_map: dict[str, Any] = {}
        self.num_train = 0
        self.id_transform: TableRows | None = None

    def _check(self, feature_map: dict[str, Any]) -> None:
        mode, where = feature_map["id_mode"], f"{self.path} (made with id mode {feature_map['id_mode']})"
        made_vocab = mode == IdMapping.vocab and feature_map["vocab_threshold"] == self.vocab_threshold
        if self.id_mapping == IdMapping.vocab and not made_vocab:
            raise DataError(f"data.id_mapping=vocab data.vocab_threshold={self.vocab_threshold}, but {where}"
                            f"{', threshold ' + str(feature_map['vocab_threshold']) if mode == 'vocab' else ''}: "
                            f"preprocess with --vocab-threshold {self.vocab_threshold}, or set data.id_mapping and "
                            "data.vocab_threshold to match the directory")
        if self.id_mapping == IdMapping.modulo and mode == "vocab":
            raise DataError(f"data.id_mapping=modulo, but {where}: preprocess with --hash-size or without either "
                            "option (raw values), or set data.id_mapping=vocab")
        if mode == "hash":
            small = {f"{key} ({name})": rows
                     for key, name, rows in zip(self.keys, SPARSE_NAMES, self.table_rows, strict=True)
                     if rows < feature_map["hash_size"]}
            if small:
                raise DataError(f"{where}: ids go up to hash size {feature_map['hash_size']} but these features' "
                                f"tables have fewer rows: {small}; set their num_embeddings >= "
                                f"{feature_map['hash_size']} or preprocess with a smaller --hash-size")

    def setup(self) -> None:
        if self.columns is not None:
            return
        columns, self.feature_map = open_columns(local_copy(self.path, self.cache_dir))  # a URL: a local copy
        self._check(self.feature_map)
        if len(columns) == 0:
            raise DataError(f"{self.path}: has no rows")
        self.num_train = len(columns) - int(round(len(columns) * self.val_fraction))
        self.id_transform = TableRows(self.feature_map["id_mode"], self.table_rows)
        self.columns = columns
        if self.val_path is not None:
            self.val_columns, self.num_train = self._other(self.val_path, "val_path"), len(columns)
        if self.test_path is not None:
            self.test_columns = self._other(self.test_path, "test_path")

    def _other(self, path: str, key: str) -> Columns:
        """The rows of a validation or test directory, whose ids must mean what the training directory's mean."""
        local = local_copy(path, self.cache_dir)
        columns, feature_map = open_columns(local)
        same = ["id_mode", "hash_size", "vocab_threshold"]
        if [feature_map.get(k) for k in same] != [self.feature_map.get(k) for k in same] or \
                feature_map["id_mode"] == IdMapping.vocab and \
                _vocab_bytes(local) != _vocab_bytes(local_copy(self.path, self.cache_dir)):
            raise DataError(f"data.{key}={path}: its ids do not mean what those of data.path={self.path} mean (id "
                            f"mode {feature_map['id_mode']} vs {self.feature_map['id_mode']}, or another vocabulary): "
                            "preprocess both without --vocab-threshold (raw ids) or with the same --hash-size")
        if len(columns) == 0:
            raise DataError(f"data.{key}={path}: has no rows")
        return columns

    def report(self) -> dict[str, float]:
        self._columns()
        skipped = SkipReport(KINDS)
        for kind, count in self.feature_map["skipped"]["counts"].items():
            skipped.add(kind, "", count)
        return {**self.split_sizes(), **skipped.metrics()}

    def summary(self) -> str:
        self._columns()
        skipped = sum(self.feature_map["skipped"]["counts"].values())
        split = self.split_summary(self.val_path, self.test_path)
        return (f"{self.path} ({self.feature_map['id_mode']} ids): {split}; {skipped} malformed lines were skipped "
                "when it was preprocessed")


@DATA_SOURCES.register("criteo_binary")
def criteo_binary_from_config(cfg: DictConfig) -> CriteoBinarySource:
    """The preprocessed (binary) Criteo source of ``data=criteo_binary``."""
    data, rows = cfg.data, feature_rows(cfg)
    return CriteoBinarySource(
        str(data.path), keys=list(cfg.features.sparse), table_rows=[rows[f] for f in cfg.features.sparse],
        batch_size=data.batch_size, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
        id_mapping=data.id_mapping, vocab_threshold=data.vocab_threshold, shuffle_batches=data.shuffle_batches,
        pin_memory=data.pin_memory, val_path=data.val_path, test_path=data.test_path, cache_dir=cfg.storage.cache_dir,
    )

"""recframe's multi-hot binary layout (MLPerf DLRM-DCNv2's Criteo 1TB shape) and the ``criteo_multihot`` source.

Every sparse feature has a fixed bag size (MLPerf: ``MLPERF_BAG_SIZES``, 214 ids per sample). A
directory written by ``recframe preprocess multihot`` holds, with ``N`` rows:

- ``dense.npy``: float32 ``[N, 13]`` (as ``criteo_binary``'s).
- ``labels.npy``: uint8 ``[N]``.
- ``sparse_<name>.npy``, one per sparse feature (``C1`` .. ``C26``): int32 ``[N, bag_size]``, table
  rows in ``[0, num_embeddings)``. Row-major, so the bags of rows ``a .. b`` are one contiguous
  block, already in KeyedJaggedTensor order for that feature.
- ``feature_map.json``: format, rows, names, ``bag_sizes``, ``num_embeddings`` per feature, and how
  the bags were made (``recframe.data.multihot_preprocess``).

A batch is read with one contiguous slice per file (memory-mapped, so a rank touches only its own
pages): the 26 blocks are concatenated into the KJT's values (int32, page-locked with
``pin_memory``), the lengths and offsets are constant per feature and built once per batch size,
and nothing is done per sample or per id in Python (``scripts/bench_data.py`` measures it).
Shuffling permutes the order of the contiguous batches every epoch (``EpochPlan.by_batch``); rows
within a batch keep file order, so shuffle the rows once when the directory is made (MLPerf's
training days are pre-shuffled). Ids are not checked at read time: they are rows of the
directory's ``num_embeddings`` by construction, and a table smaller than that needs
``tables.id_policy=modulo`` (``recframe train`` says so before it starts).

Example:
    >>> source = CriteoMultiHotSource("mlperf_mh/", keys=[f"cat_{i}" for i in range(26)],
    ...                               batch_size=8192, val_fraction=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import IterableDataset

from recframe import storage
from recframe.data.arrays import EpochBatches, EpochPlan, Rows, ValBatches, count_rows, host_empty, pin_here, to_host
from recframe.data.binary import FEATURE_MAP
from recframe.data.binary import FORMAT as ONE_HOT_FORMAT
from recframe.data.report import DataError
from recframe.data.source import DATA_SOURCES
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.storage_cache import local_copy

FORMAT = "recframe.criteo_multihot"
VERSION = 1
ID_DTYPE = np.int32
# MLPerf DLRM-DCNv2 (Criteo 1TB multi-hot): ids per sample of each of the 26 features, and table rows.
MLPERF_BAG_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)
MLPERF_NUM_EMBEDDINGS = (40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209,
                         11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36)


def _make_it(directory: str | Path, again: bool = True) -> str:
    """The fix for a missing or damaged directory: the command that makes it."""
    return (f"make it{' again' if again else ''} with: recframe preprocess multihot --input CRITEO_BINARY_DIR "
            f"--output {directory}")


def sparse_file(name: str) -> str:
    """The file of sparse feature ``name``.

    Args:
        name: the feature's name in the feature map (``C1`` ..).

    Example:
        >>> sparse_file("C7")
        'sparse_C7.npy'
    """
    return f"sparse_{name}.npy"


def load_multihot_feature_map(directory: str | Path) -> dict[str, Any]:
    """The ``feature_map.json`` of a multi-hot directory; a DataError naming the file and the fix otherwise.

    Args:
        directory: the directory.

    Example:
        >>> load_multihot_feature_map("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        recframe.data.report.DataError: /nonexistent/feature_map.json: not found; make it with: ...
    """
    path = storage.join(storage.location(directory), FEATURE_MAP)  # a local path or an fsspec URL
    if not storage.is_file(path):
        raise DataError(f"{path}: not found; " + _make_it(directory, again=False))
    feature_map = json.loads(storage.read_text(path))
    if feature_map.get("format") == ONE_HOT_FORMAT:
        raise DataError(f"{path}: a one-hot criteo_binary directory; use data=criteo_binary, or make the multi-hot "
                        f"layout from it: recframe preprocess multihot --input {directory} --output NEW_DIR")
    if feature_map.get("format") != FORMAT or feature_map.get("version") != VERSION:
        raise DataError(f"{path}: not a {FORMAT} version {VERSION} feature map; " + _make_it(directory))
    return feature_map


def _open_array(path: Path, shape: tuple[int, ...], dtype: type, directory: str | Path) -> np.ndarray:
    """A file's memory map, as a plain ndarray view, checked against the feature map (shape, type, size)."""
    if not path.is_file():
        raise DataError(f"{path}: missing from the directory; " + _make_it(directory))
    try:
        array = np.load(path, mmap_mode="r")
    except ValueError as error:  # a file shorter than its header says
        raise DataError(f"{path}: cannot be read ({error}): the file is truncated or damaged; "
                        + _make_it(directory)) from error
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise DataError(f"{path}: holds {array.dtype} {list(array.shape)}, but {FEATURE_MAP} says "
                        f"{np.dtype(dtype)} {list(shape)}; " + _make_it(directory))
    return np.asarray(array)  # a view of the same pages without np.memmap's per-slice overhead


@dataclass
class MultiHotArrays:
    """The memory-mapped arrays of a multi-hot directory.

    Args:
        dense: float32 ``[N, num_dense]``.
        labels: uint8 ``[N]``.
        sparse: one int32 ``[N, bag_size]`` array per sparse feature.
        feature_map: the directory's ``feature_map.json``.
    """

    dense: np.ndarray
    labels: np.ndarray
    sparse: list[np.ndarray]
    feature_map: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def bag_sizes(self) -> list[int]:
        return [int(ids.shape[1]) for ids in self.sparse]


def open_multihot(directory: str | Path) -> MultiHotArrays:
    """Memory-map a multi-hot directory, checking every file against its feature map (no pass over the data).

    Args:
        directory: written by ``recframe preprocess multihot``.

    Example:
        >>> arrays = open_multihot("mlperf_mh/")  # doctest: +SKIP
        >>> sum(arrays.bag_sizes)  # doctest: +SKIP
        214
    """
    feature_map = load_multihot_feature_map(directory)
    d, rows = Path(directory), int(feature_map["rows"])
    names, bags = feature_map["sparse_names"], feature_map["bag_sizes"]
    dense = _open_array(d / "dense.npy", (rows, len(feature_map["dense_names"])), np.float32, directory)
    labels = _open_array(d / "labels.npy", (rows,), np.uint8, directory)
    sparse = [_open_array(d / sparse_file(n), (rows, b), ID_DTYPE, directory) for n, b in zip(names, bags, strict=True)]
    return MultiHotArrays(dense, labels, sparse, feature_map)


class MultiHotReader:
    """Reads the Batch of contiguous rows: one slice per file, no per-sample or per-id Python.

    The lengths and offsets tensors depend only on the batch size; they are made once per size and
    shared by the batches of that size (never written after).

    Args:
        arrays: the data.
        keys: the KJT keys, one per sparse feature, in file order.
        pin_memory: write batches into page-locked memory (with CUDA, in the main process).

    Example:
        >>> reader = MultiHotReader(open_multihot("mlperf_mh/"), [f"cat_{i}" for i in range(26)])  # doctest: +SKIP
        >>> reader(slice(0, 8192)).sparse_features.values().numel()  # doctest: +SKIP
        1753088
    """

    def __init__(self, arrays: MultiHotArrays, keys: list[str], pin_memory: bool = False) -> None:
        if len(keys) != len(arrays.sparse):
            raise ValueError(f"MultiHotReader: {len(keys)} keys for {len(arrays.sparse)} sparse features")
        self.arrays, self.keys, self.pin_memory = arrays, list(keys), pin_memory
        self.ids_per_sample = sum(arrays.bag_sizes)
        self._layouts: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def _layout(self, size: int, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Key-major lengths and offsets of a batch of ``size`` samples."""
        if (size, pin) not in self._layouts:
            lengths = torch.tensor(self.arrays.bag_sizes, dtype=torch.int32).repeat_interleave(size)
            offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
            torch.cumsum(lengths, 0, out=offsets[1:])
            if pin:
                lengths, offsets = lengths.pin_memory(), offsets.pin_memory()
            self._layouts[size, pin] = lengths, offsets
        return self._layouts[size, pin]

    def __call__(self, rows: Rows) -> Batch:
        size, pin = count_rows(rows), pin_here(self.pin_memory)
        values = host_empty((size * self.ids_per_sample,), torch.int32, pin)
        np.concatenate([ids[rows].reshape(-1) for ids in self.arrays.sparse], out=values.numpy())
        lengths, offsets = self._layout(size, pin)
        kjt = KeyedJaggedTensor(self.keys, values, lengths=lengths, offsets=offsets, stride=size, validate=False,
                                length_per_key=[bag * size for bag in self.arrays.bag_sizes])
        return Batch(dense_features=to_host(self.arrays.dense[rows], torch.float32, pin), sparse_features=kjt,
                     labels=to_host(self.arrays.labels[rows], torch.float32, pin))


class CriteoMultiHotSource:
    """A multi-hot directory, memory-mapped; the last ``val_fraction`` of rows validate.

    Training batches are contiguous slices; ``shuffle`` permutes their order every epoch (the same on
    every rank, from ``(seed, epoch)``). A rank's position is the number of batches it consumed.

    Args:
        path: the directory written by ``recframe preprocess multihot`` (a local path or an fsspec URL).
        keys: the KJT keys of the sparse features, in the directory's order.
        batch_size: samples per batch per rank.
        val_fraction: the last fraction of rows (file order) used for validation.
        shuffle: permute the order of the training batches every epoch.
        seed: seed of the permutations.
        pin_memory: page-locked batches (with CUDA, in the main process).
        bag_sizes: the bag sizes the model expects (checked against the directory); None: the directory's.
        cache_dir: where a directory at a URL is copied to be memory-mapped (``recframe.storage_cache``; None: its
            default).
    """

    def __init__(self, path: str, keys: list[str], batch_size: int, val_fraction: float = 0.05, shuffle: bool = True,
                 seed: int = 0, pin_memory: bool = False, bag_sizes: list[int] | None = None,
                 cache_dir: str | None = None) -> None:
        self.path, self.keys, self.batch_size, self.val_fraction = path, list(keys), batch_size, val_fraction
        self.shuffle, self.seed, self.pin_memory, self.bag_sizes = shuffle, seed, pin_memory, bag_sizes
        self.cache_dir = cache_dir
        self.arrays: MultiHotArrays | None = None
        self.num_train = 0

    def setup(self) -> None:
        if self.arrays is not None:
            return
        arrays = open_multihot(local_copy(self.path, self.cache_dir))  # a URL: a local copy
        where = storage.join(storage.location(self.path), FEATURE_MAP)
        names = arrays.feature_map["sparse_names"]
        if len(self.keys) != len(names):
            raise DataError(f"{where}: {len(names)} sparse features {names}, but features.sparse has "
                            f"{len(self.keys)}; use a features config with {len(names)} sparse features "
                            "(features=mlperf_dcnv2) or make the directory from matching data")
        if self.bag_sizes is not None and list(self.bag_sizes) != arrays.bag_sizes:
            raise DataError(f"{where}: bag sizes {arrays.bag_sizes}, but data.ids_per_feature is "
                            f"{list(self.bag_sizes)}; set data.ids_per_feature={arrays.bag_sizes} or make the "
                            "directory with --bag-sizes matching it")
        if len(arrays) == 0:
            raise DataError(f"{self.path}: has no rows")
        self.num_train = len(arrays) - int(round(len(arrays) * self.val_fraction))
        self.arrays = arrays

    def _reader(self) -> MultiHotReader:
        self.setup()
        assert self.arrays is not None
        return MultiHotReader(self.arrays, self.keys, self.pin_memory)

    def train_dataset(self, rank: int, world_size: int, first_batch: int) -> IterableDataset:
        """This rank's training batches from position ``first_batch`` (batches it consumed)."""
        read = self._reader()
        plan = EpochPlan(self.num_train, self.batch_size, world_size, rank, self.shuffle, self.seed, by_batch=True)
        return EpochBatches(read, plan, first_batch=first_batch)

    def val_dataset(self, rank: int, world_size: int) -> IterableDataset:
        """This rank's validation batches (contiguous, in order)."""
        read = self._reader()
        rows = len(read.arrays)
        return ValBatches(read, self.num_train, rows - self.num_train, self.batch_size, world_size, rank)

    def test_dataset(self, rank: int, world_size: int) -> None:
        """No test set (``data.test_path`` is for the tabular, Criteo TSV and binary sources)."""
        return None

    def report(self) -> dict[str, float]:
        read = self._reader()
        return {"data/rows_train": self.num_train, "data/rows_val": len(read.arrays) - self.num_train}

    def summary(self) -> str:
        read = self._reader()
        rows = len(read.arrays)
        return (f"{self.path}: {rows} rows of {read.ids_per_sample} ids (multi-hot, bag sizes "
                f"{read.arrays.bag_sizes}): {self.num_train} for training in batch-shuffled epochs, "
                f"{rows - self.num_train} for validation (the last {self.val_fraction:g})")


@DATA_SOURCES.register("criteo_multihot")
def criteo_multihot_from_config(cfg: DictConfig) -> CriteoMultiHotSource:
    """The multi-hot (MLPerf layout) Criteo source of ``data=criteo_multihot``."""
    data = cfg.data
    return CriteoMultiHotSource(
        str(data.path), keys=list(cfg.features.sparse), batch_size=data.batch_size, val_fraction=data.val_fraction,
        shuffle=data.shuffle, seed=data.seed, pin_memory=data.pin_memory, bag_sizes=list(data.ids_per_feature) or None,
        cache_dir=cfg.storage.cache_dir,
    )

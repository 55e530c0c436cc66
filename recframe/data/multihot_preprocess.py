"""``recframe preprocess multihot``: one-hot Criteo rows -> the multi-hot layout of MLPerf DLRM-DCNv2.

MLPerf makes its multi-hot Criteo 1TB from the one-hot data: the one-hot id ``x`` of feature ``f``
becomes a bag of ``bag_size[f]`` ids, ``x`` first, then ids drawn from ``x`` by a fixed seeded rule
(MLPerf's "uniform": anywhere in the table), so the same id always gets the same bag, in every run
and on every rank. recframe follows the idea with a hash where MLPerf keeps a table of random offsets
(no memory per table row, any table size)::

    bag[0] = x,    bag[j] = (x + splitmix64(x ^ salt(seed, f, j))) mod num_embeddings[f],  j = 1 .. bag_size[f] - 1

The one-hot values first become rows of tables of ``--num-embeddings`` rows (default: MLPerf's
sizes), as ``criteo_binary`` maps them: raw values by modulo (row 0: missing), vocabulary or hashed
ids past a table to the out-of-vocabulary row 1; so every id written is a row of its table. Inputs:

- ``--input DIR``: a directory of ``recframe preprocess criteo`` (any id mode, with labels);
- ``--synthetic ROWS``: rows of the synthetic Criteo generator, one id per feature (its labels come
  from its hidden model and those one-hot ids).

Rows keep the input's order (``criteo_multihot`` shuffles the order of batches, not rows: shuffle the
rows before, if the input is ordered). Memory is bounded by ``--block-rows``.

Example:
    $ recframe preprocess multihot --input /data/criteo_bin --output /data/criteo_multihot
    $ recframe preprocess multihot --synthetic 1000000 --output /tmp/mlperf_synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recframe import storage
from recframe.data.binary import FEATURE_MAP, NpyAppender, TableRows, open_columns
from recframe.data.criteo import DENSE_NAMES, SPARSE_NAMES
from recframe.data.multihot import (
    FORMAT,
    ID_DTYPE,
    MLPERF_BAG_SIZES,
    MLPERF_NUM_EMBEDDINGS,
    VERSION,
    sparse_file,
)
from recframe.data.report import DataError

_U64 = np.uint64
DEFAULT_BLOCK_ROWS = 1 << 16
RULE = "bag[0] = x; bag[j] = (x + splitmix64(x ^ salt(seed, feature, j))) % num_embeddings"


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-mixed hash of uint64 values (vectorized, wraps mod 2**64).

    Args:
        x: uint64 values.

    Example:
        >>> splitmix64(np.array([0, 1], dtype=np.uint64)).tolist()
        [16294208416658607535, 10451216379200822465]
    """
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def bag_salts(seed: int, feature: int, bag_size: int) -> np.ndarray:
    """The ``bag_size - 1`` salts of a feature's extra bag positions (uint64).

    Args:
        seed: the materialization seed.
        feature: the feature's position.
        bag_size: ids per bag.

    Example:
        >>> bag_salts(0, 3, 4).shape
        (3,)
    """
    positions = np.arange(1, bag_size, dtype=_U64)
    return splitmix64(splitmix64(np.array([seed, feature], dtype=_U64)).sum() + positions)


def multihot_bags(ids: np.ndarray, bag_size: int, num_rows: int, salts: np.ndarray) -> np.ndarray:
    """One feature's bags: ``[n]`` one-hot table rows -> int32 ``[n, bag_size]`` (see the module docstring).

    Args:
        ids: table rows in ``[0, num_rows)``.
        bag_size: ids per bag (>= 1).
        num_rows: the table's rows (< 2**31).
        salts: ``bag_salts(seed, feature, bag_size)``.

    Example:
        >>> bags = multihot_bags(np.array([5, 5, 7]), 3, 10, bag_salts(0, 0, 3))
        >>> bags[:, 0].tolist(), bags[0].tolist() == bags[1].tolist(), int(bags.max()) < 10
        ([5, 5, 7], True, True)
    """
    out = np.empty((ids.shape[0], bag_size), dtype=ID_DTYPE)
    out[:, 0] = ids
    if bag_size > 1:
        x = ids.astype(_U64)[:, None]
        rows = _U64(num_rows)
        out[:, 1:] = (x + splitmix64(x ^ salts[None, :]) % rows) % rows
    return out


@dataclass
class OneHotBlock:
    """Consecutive one-hot rows: ``dense`` float32 ``[b, 13]``, ``labels`` uint8 ``[b]``, ``ids`` ``[b, 26]``
    table rows."""

    dense: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


def binary_blocks(directory: str, num_embeddings: list[int], block_rows: int) -> Iterator[OneHotBlock]:
    """The rows of a ``criteo_binary`` directory, ids mapped to rows of tables of ``num_embeddings`` rows.

    Args:
        directory: written by ``recframe preprocess criteo`` (with labels).
        num_embeddings: rows of each feature's table.
        block_rows: rows per block.

    Example:
        >>> next(binary_blocks("criteo_bin/", list(MLPERF_NUM_EMBEDDINGS), 4096)).ids.shape  # doctest: +SKIP
        (4096, 26)
    """
    columns, feature_map = open_columns(directory)
    to_rows = TableRows(feature_map["id_mode"], num_embeddings)
    for start in range(0, len(columns), block_rows):
        rows = slice(start, start + block_rows)
        yield OneHotBlock(np.asarray(columns.dense[rows]), np.asarray(columns.labels[rows]), to_rows(columns.ids[rows]))


def synthetic_blocks(rows: int, num_embeddings: list[int], seed: int, zipf_exponent: float,
                     block_rows: int) -> Iterator[OneHotBlock]:
    """``rows`` rows of the synthetic Criteo generator, one id per feature, block ``i`` = its batch ``i``.

    Args:
        rows: rows in all.
        num_embeddings: rows of each feature's table.
        seed: the generator's seed.
        zipf_exponent: skew of the ids (0: uniform).
        block_rows: rows per block.

    Example:
        >>> [b.ids.shape for b in synthetic_blocks(5, [10] * 26, seed=0, zipf_exponent=1.0, block_rows=3)]
        [(3, 26), (2, 26)]
    """
    from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo

    generator = SyntheticCriteo(SyntheticConfig(table_sizes=tuple(num_embeddings), zipf_exponent=zipf_exponent),
                                seed=seed)
    for index, start in enumerate(range(0, rows, block_rows)):
        batch = generator.batch(index, min(block_rows, rows - start))
        size, features = batch.batch_size, len(num_embeddings)
        ids = batch.sparse_features.values().numpy().reshape(features, size).T
        yield OneHotBlock(batch.dense_features.numpy(), batch.labels.numpy().astype(np.uint8), ids)


def write_multihot(blocks: Iterator[OneHotBlock], output: str | Path, bag_sizes: list[int],
                   num_embeddings: list[int], seed: int, source: dict[str, Any], total_rows: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Write the multi-hot directory of one-hot ``blocks``; returns its feature map.

    Args:
        blocks: the rows, in order (ids are rows of tables of ``num_embeddings`` rows).
        output: the directory (created; its files are replaced; ``feature_map.json`` comes last).
        bag_sizes: ids per sample of each sparse feature.
        num_embeddings: rows of each feature's table.
        seed: the seed of the bags' salts.
        source: where the rows came from (kept in the feature map).
        total_rows: rows expected (for the progress bar).
        progress: show a progress bar (tqdm, on stderr).

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> fm = write_multihot(synthetic_blocks(8, [50] * 26, 0, 1.0, 4), out, [2] * 26, [50] * 26, seed=0,
        ...                     source={"kind": "synthetic"}, progress=False)
        >>> fm["rows"], fm["ids_per_sample"], np.load(f"{out}/sparse_C1.npy").shape
        (8, 52, (8, 2))
    """
    from tqdm import tqdm

    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / FEATURE_MAP).unlink(missing_ok=True)  # present only once the directory is complete
    names = list(SPARSE_NAMES)
    salts = [bag_salts(seed, f, bag) for f, bag in enumerate(bag_sizes)]
    sparse = [NpyAppender(out / sparse_file(n), ID_DTYPE, (b,)) for n, b in zip(names, bag_sizes, strict=True)]
    dense, labels = NpyAppender(out / "dense.npy", np.float32, (len(DENSE_NAMES),)), NpyAppender(
        out / "labels.npy", np.uint8, ())
    try:
        with tqdm(total=total_rows, unit="rows", unit_scale=True, desc="multi-hot", disable=not progress) as bar:
            for block in blocks:
                dense.append(block.dense)
                labels.append(block.labels)
                for f, appender in enumerate(sparse):
                    appender.append(multihot_bags(block.ids[:, f], bag_sizes[f], num_embeddings[f], salts[f]))
                bar.update(block.labels.shape[0])
    finally:
        for appender in (dense, labels, *sparse):
            appender.close()
    feature_map = {
        "format": FORMAT, "version": VERSION, "rows": labels.rows, "has_label": True,
        "dense_names": list(DENSE_NAMES), "sparse_names": names, "bag_sizes": list(bag_sizes),
        "ids_per_sample": int(sum(bag_sizes)), "id_dtype": np.dtype(ID_DTYPE).name,
        "num_embeddings": dict(zip(names, num_embeddings, strict=True)),
        "multihot": {"rule": RULE, "seed": seed}, "source": source,
        "files": {"dense": "dense.npy", "labels": "labels.npy", "sparse": {n: sparse_file(n) for n in names}},
        "seconds": round(time.perf_counter() - started, 3),
    }
    tmp = out / (FEATURE_MAP + ".tmp")
    tmp.write_text(json.dumps(feature_map, indent=2) + "\n")
    tmp.replace(out / FEATURE_MAP)
    return feature_map


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recframe preprocess multihot",
                                description="one-hot Criteo rows -> MLPerf DLRM-DCNv2's multi-hot layout "
                                            "(dense.npy, labels.npy, sparse_C<i>.npy [rows, bag size], "
                                            "feature_map.json), deterministic in --seed.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="DIR", help="a directory of `recframe preprocess criteo` (with labels); "
                        "a URL is downloaded to $TMPDIR first")
    source.add_argument("--synthetic", type=int, metavar="ROWS", help="rows of the synthetic Criteo generator")
    p.add_argument("--output", required=True, metavar="DIR", help="output directory (its files are replaced); a URL "
                   "(s3://...) is written under $TMPDIR first, then uploaded")
    p.add_argument("--bag-sizes", type=_int_list, default=list(MLPERF_BAG_SIZES), metavar="B1,..,B26",
                   help="ids per sample of each feature (default: MLPerf's, 214 in all)")
    p.add_argument("--num-embeddings", type=_int_list, default=list(MLPERF_NUM_EMBEDDINGS), metavar="R1,..,R26",
                   help="rows of each feature's table (default: MLPerf DLRM-DCNv2's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bags (and of --synthetic rows)")
    p.add_argument("--zipf-exponent", type=float, default=1.05, help="--synthetic: skew of the one-hot ids")
    p.add_argument("--block-rows", type=int, default=DEFAULT_BLOCK_ROWS, help="rows per block written")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _problems(ns: argparse.Namespace) -> list[str]:
    out = []
    features = len(SPARSE_NAMES)
    for flag, values in (("--bag-sizes", ns.bag_sizes), ("--num-embeddings", ns.num_embeddings)):
        if len(values) != features:
            out.append(f"{flag}: {len(values)} values; give one per sparse feature ({features})")
    if min(ns.bag_sizes) < 1:
        out.append(f"--bag-sizes: every bag holds >= 1 id, got {ns.bag_sizes}")
    if min(ns.num_embeddings) < 2 or max(ns.num_embeddings) >= 2**31:
        out.append("--num-embeddings: each in [2, 2**31) (row 0: missing values; ids are stored as int32)")
    if ns.input is not None and not storage.is_file(storage.join(storage.location(ns.input), FEATURE_MAP)):
        out.append(f"--input {ns.input}: no {FEATURE_MAP}; make it with: recframe preprocess criteo --input FILE... "
                   f"--output {ns.input}")
    if ns.synthetic is not None and ns.synthetic < 1:
        out.append(f"--synthetic: rows must be >= 1, got {ns.synthetic}")
    if ns.block_rows < 1 or ns.seed < 0:
        out.append(f"--block-rows must be >= 1 and --seed >= 0, got {ns.block_rows} and {ns.seed}")
    return out


def multihot_command(args: list[str]) -> int:
    """``recframe preprocess multihot ...``: returns the exit code (1: a data error, 2: bad arguments).

    Args:
        args: the arguments after ``multihot``.

    Example:
        >>> multihot_command(["--synthetic", "0", "--output", "/tmp/x"])
        2
    """
    ns = _parser().parse_args(args)
    problems = _problems(ns)
    if problems:
        print("recframe preprocess multihot:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2
    try:  # URLs: an --input folder is downloaded to $TMPDIR; an --output one is written there, then uploaded
        with storage.staged_input(ns.input) if ns.input is not None else nullcontext() as local_input, \
                storage.staged_output(ns.output, marker=FEATURE_MAP) as output:
            if ns.input is not None:
                blocks, total = binary_blocks(str(local_input), ns.num_embeddings, ns.block_rows), None
                source: dict[str, Any] = {"kind": "criteo_binary", "path": str(ns.input)}
            else:
                blocks, total = synthetic_blocks(ns.synthetic, ns.num_embeddings, ns.seed, ns.zipf_exponent,
                                                 ns.block_rows), ns.synthetic
                source = {"kind": "synthetic", "seed": ns.seed, "zipf_exponent": ns.zipf_exponent}
            fm = write_multihot(blocks, output, ns.bag_sizes, ns.num_embeddings, ns.seed, source, total_rows=total,
                                progress=not ns.quiet)
    except DataError as error:
        print(f"recframe preprocess multihot: {error}", file=sys.stderr)
        return 1
    print(f"{ns.output}: {fm['rows']} rows of {fm['ids_per_sample']} ids, {fm['seconds']} s "
          f"({fm['rows'] / max(fm['seconds'], 1e-9):,.0f} rows/s)")
    bags = "" if tuple(ns.bag_sizes) == MLPERF_BAG_SIZES else \
        f" 'data.ids_per_feature=[{','.join(map(str, ns.bag_sizes))}]'"
    print(f"train with: recframe train +experiment=mlperf_dcnv2 data=criteo_multihot data.path={ns.output}{bags}")
    return 0

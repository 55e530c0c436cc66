"""``recframe preprocess criteo``: Criteo TSV files -> recframe's binary columnar layout.

The inputs are streamed in chunks of whole lines (memory is bounded by the chunks in flight, not
by the files: files larger than RAM work), parsed by a pool of worker processes in parallel
(``--workers``, default: the usable cores) and written in input order by the main process into
``.npy`` files that grow as they go (``recframe.data.binary`` describes the layout). Categorical
ids are, by option:

- ``--hash-size N``: ``1 + v % (N - 1)`` (0: missing), one pass;
- ``--vocab-threshold T``: a vocabulary of the values seen at least ``T`` times in all inputs (0:
  missing, 1: out of vocabulary, 2..: by decreasing count), two passes: raw values are written
  and counted, then mapped block by block (in parallel) and the raw file removed;
- neither: raw values (int64, -1 missing); ``criteo_binary`` hashes them by each table's size.

Malformed lines follow ``--on-error`` (``skip``: counted per kind in ``feature_map.json``; ``error``:
stop at the first, naming file, line and field). Distinct values are counted per feature in all
modes (memory grows with the distinct values, about 16 bytes each, not with the rows).

Example:
    $ recframe preprocess criteo --input day_0 day_1 --output /data/criteo_bin --vocab-threshold 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recframe import storage
from recframe.data.binary import FEATURE_MAP, FORMAT, VERSION, NpyAppender
from recframe.data.categorical import MISSING_ID, OOV_ID, Vocabulary, count_values, merge_counts
from recframe.data.criteo import (
    DEFAULT_CHUNK_BYTES,
    DENSE_NAMES,
    KINDS,
    NUM_DENSE,
    NUM_SPARSE,
    SPARSE_NAMES,
    iter_line_chunks,
    parse_criteo_bytes,
)
from recframe.data.report import DataError, SkipReport

_LOW_63_BITS = np.uint64(2**63 - 1)
MAP_BLOCK_ROWS = 1 << 18  # rows per task of the vocabulary pass


@dataclass(frozen=True)
class Options:
    """How to read and encode (see ``recframe preprocess criteo --help``)."""

    has_label: bool = True
    pad_short_rows: bool = False
    on_error: str = "skip"
    max_examples: int = 5
    hash_size: int | None = None
    vocab_threshold: int | None = None

    @property
    def id_mode(self) -> str:
        return "hash" if self.hash_size else "vocab" if self.vocab_threshold else "raw"


@dataclass
class Chunk:
    """One parsed chunk: arrays to append, its skip report and its value counts per feature."""

    dense: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    report: SkipReport
    counts: list[tuple[np.ndarray, np.ndarray]]
    nbytes: int


def process_chunk(task: tuple[bytes, str, int, Options]) -> Chunk:
    """Parse and encode one chunk (runs in a worker process)."""
    data, source, first_line, options = task
    rows, report = parse_criteo_bytes(data, source=source, first_line=first_line, has_label=options.has_label,
                                      pad_short_rows=options.pad_short_rows, on_error=options.on_error,
                                      max_examples=options.max_examples)
    counts = [count_values(rows.categorical[~rows.missing[:, j], j]) for j in range(NUM_SPARSE)]
    if options.hash_size:
        ids = (rows.categorical % np.uint64(options.hash_size - 1)).astype(np.int32) + 1
        ids[rows.missing] = MISSING_ID
    else:
        ids = (rows.categorical & _LOW_63_BITS).astype(np.int64)
        ids[rows.missing] = -1
    labels = rows.labels.astype(np.uint8) if rows.labels is not None else None
    return Chunk(rows.dense, ids, labels, report, counts, len(data))


def ordered_map(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, tasks)`` over ``workers`` processes, in order, with at most ``2 * workers`` tasks in flight."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    import multiprocessing

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    pending: deque = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class CountRuns:
    """Value counts merged as they come, in runs of growing size (total work O(D log chunks))."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, run: tuple[np.ndarray, np.ndarray]) -> None:
        self.runs.append(run)
        while len(self.runs) >= 2 and self.runs[-2][0].size <= 2 * self.runs[-1][0].size:
            last = self.runs.pop()
            self.runs.append(merge_counts([self.runs.pop(), last]))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return merge_counts(self.runs)


_VOCAB_CACHE: dict[str, list[Vocabulary]] = {}


def _vocabularies(path: str) -> list[Vocabulary]:
    if path not in _VOCAB_CACHE:
        with np.load(path) as saved:
            _VOCAB_CACHE[path] = [Vocabulary(saved[f"{n}_values"], saved[f"{n}_ids"]) for n in SPARSE_NAMES]
    return _VOCAB_CACHE[path]


def map_block(task: tuple[str, str, str, int, int]) -> int:
    """Vocabulary pass: rows ``[start, stop)`` of the raw ids -> vocabulary ids (runs in a worker process)."""
    raw_path, out_path, vocab_path, start, stop = task
    raw = np.load(raw_path, mmap_mode="r")[start:stop]
    out = np.load(out_path, mmap_mode="r+")
    for j, vocab in enumerate(_vocabularies(vocab_path)):
        column = raw[:, j]
        out[start:stop, j] = vocab.lookup(column.astype(np.uint64), column < 0)
    out.flush()
    return stop - start


def _total_bytes(inputs: list[str]) -> int | None:
    sizes = [os.path.getsize(p) for p in inputs if os.path.isfile(p) and not p.endswith((".gz", ".bz2", ".xz"))]
    return sum(sizes) if len(sizes) == len(inputs) else None


def preprocess_criteo(inputs: list[str], output: str | os.PathLike, options: Options, workers: int = 1,
                      chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True) -> dict[str, Any]:
    """Convert Criteo TSV files into a binary directory; returns its feature map.

    Args:
        inputs: the TSV files, in order (their rows are concatenated).
        output: the directory (created; its files are replaced).
        options: reading and id encoding.
        workers: parsing processes (1: in this process).
        chunk_bytes: about how many bytes each parse task gets.
        progress: show progress bars (tqdm, on stderr).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / FEATURE_MAP).unlink(missing_ok=True)  # present only once the directory is complete
    raw_ids = options.id_mode == "vocab"
    sparse_file = out / ("sparse_raw.npy" if raw_ids else "sparse.npy")
    sparse_dtype = np.int32 if options.hash_size else np.int64
    report = SkipReport(KINDS, options.max_examples)
    counts = [CountRuns() for _ in range(NUM_SPARSE)]
    inputs_info: list[dict[str, Any]] = []
    bar = tqdm(total=_total_bytes(inputs), unit="B", unit_scale=True, desc="parse", disable=not progress)

    def tasks(path: str) -> Iterator[tuple[bytes, str, int, Options]]:
        for data, first_line in iter_line_chunks(path, chunk_bytes):
            yield data, path, first_line, options

    with NpyAppender(out / "dense.npy", np.float32, (NUM_DENSE,)) as dense, \
            NpyAppender(sparse_file, sparse_dtype, (NUM_SPARSE,)) as sparse:
        labels = NpyAppender(out / "labels.npy", np.uint8, ()) if options.has_label else None
        try:
            for path in inputs:
                first_row = dense.rows
                for chunk in ordered_map(process_chunk, tasks(path), workers):
                    dense.append(chunk.dense)
                    sparse.append(chunk.ids)
                    if labels is not None:
                        labels.append(chunk.labels)
                    report.merge(chunk.report)
                    for runs, run in zip(counts, chunk.counts, strict=True):
                        runs.add(run)
                    bar.update(chunk.nbytes)
                inputs_info.append({"path": str(path), "rows": dense.rows - first_row})
        finally:
            if labels is not None:
                labels.close()
            bar.close()
        rows = dense.rows

    totals = [runs.result() for runs in counts]
    num_embeddings: dict[str, int | None] = {name: options.hash_size for name in SPARSE_NAMES}
    if raw_ids:
        vocabs = [Vocabulary.from_counts(v, c, threshold=options.vocab_threshold or 1) for v, c in totals]
        named = list(zip(SPARSE_NAMES, vocabs, strict=True))
        np.savez(out / "vocab.npz", **{f"{n}_values": v.sorted_values for n, v in named},
                 **{f"{n}_ids": v.sorted_ids for n, v in named})
        num_embeddings = {n: v.num_rows for n, v in named}
        mapped = np.lib.format.open_memmap(out / "sparse.npy", mode="w+", dtype=np.int32, shape=(rows, NUM_SPARSE))
        del mapped
        blocks = [(str(sparse_file), str(out / "sparse.npy"), str(out / "vocab.npz"), start,
                   min(start + MAP_BLOCK_ROWS, rows)) for start in range(0, rows, MAP_BLOCK_ROWS)]
        with tqdm(total=rows, unit="rows", unit_scale=True, desc="vocab ids", disable=not progress) as bar2:
            for done in ordered_map(map_block, blocks, workers):
                bar2.update(done)
        sparse_file.unlink()
    feature_map = {
        "format": FORMAT, "version": VERSION, "rows": rows, "has_label": options.has_label,
        "dense_names": list(DENSE_NAMES), "sparse_names": list(SPARSE_NAMES),
        "dense_transform": "log(1 + max(x, 0)); missing -> 0 first",
        "id_mode": options.id_mode, "hash_size": options.hash_size, "vocab_threshold": options.vocab_threshold,
        "missing_id": MISSING_ID if options.id_mode != "raw" else -1, "oov_id": OOV_ID if raw_ids else None,
        "num_embeddings": num_embeddings,
        "distinct_values": {n: int(v.size) for n, (v, _) in zip(SPARSE_NAMES, totals, strict=True)},
        "skipped": report.to_dict(), "inputs": inputs_info,
        "files": {"dense": "dense.npy", "sparse": "sparse.npy", **({"labels": "labels.npy"} if options.has_label
                                                                    else {})},
        "seconds": round(time.perf_counter() - started, 3), "workers": workers,
    }
    tmp = out / (FEATURE_MAP + ".tmp")
    tmp.write_text(json.dumps(feature_map, indent=2) + "\n")
    tmp.replace(out / FEATURE_MAP)
    return feature_map


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recframe preprocess criteo",
                                description="Criteo TSV (Kaggle train.txt / 1TB day_N) -> recframe's binary layout "
                                            "(dense.npy, sparse.npy, labels.npy, feature_map.json).")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="TSV files, in order (.gz ok; paths "
                   "or fsspec URLs, read as they stream)")
    p.add_argument("--output", required=True, metavar="DIR", help="output directory (its files are replaced); a URL "
                   "(s3://...) is written under $TMPDIR first, then uploaded")
    ids = p.add_mutually_exclusive_group()
    ids.add_argument("--vocab-threshold", type=int, metavar="N",
                     help="vocabulary ids: values seen >= N times get a row (by decreasing count), others row 1")
    ids.add_argument("--hash-size", type=int, metavar="N", help="hashed ids 1 + value %% (N - 1); 0 = missing")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="parsing processes "
                   "(default: the usable cores)")
    p.add_argument("--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20, help="MiB of text per task")
    p.add_argument("--on-error", choices=["skip", "error"], default="skip",
                   help="malformed lines: skip and count (default) or stop at the first")
    p.add_argument("--max-reported-errors", type=int, default=5, help="malformed lines described per kind")
    p.add_argument("--no-label", action="store_true", help="the lines have no label (Kaggle test.txt: 39 fields)")
    p.add_argument("--pad-short-rows", action="store_true", help="read short lines as having empty trailing fields")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def preprocess_command(args: list[str]) -> int:
    """``recframe preprocess criteo|multihot ...``: returns the exit code (1: a data error, 2: bad arguments)."""
    if not args or args[0] in ("-h", "--help"):
        print("usage: recframe preprocess criteo --input FILE... --output DIR [--vocab-threshold N | --hash-size N]\n"
              "       recframe preprocess multihot (--input CRITEO_BINARY_DIR | --synthetic ROWS) --output DIR\n"
              "`recframe preprocess criteo --help` (or multihot --help) shows every option.",
              file=sys.stderr if not args else sys.stdout)
        return 0 if args else 2
    if args[0] == "multihot":
        from recframe.data.multihot_preprocess import multihot_command

        return multihot_command(args[1:])
    if args[0] != "criteo":
        print(f"recframe preprocess: unknown data set {args[0]!r}; known: criteo, multihot", file=sys.stderr)
        return 2
    ns = _parser().parse_args(args[1:])
    problems = [f"--input {p}: no such file" for p in ns.input if "://" not in p and not os.path.isfile(p)]
    if ns.hash_size is not None and ns.hash_size < 2:
        problems.append(f"--hash-size must be >= 2 (row 0 is for missing values), got {ns.hash_size}")
    if ns.vocab_threshold is not None and ns.vocab_threshold < 1:
        problems.append(f"--vocab-threshold must be >= 1, got {ns.vocab_threshold}")
    if ns.workers < 1 or ns.chunk_mb <= 0:
        problems.append("--workers must be >= 1 and --chunk-mb > 0")
    if problems:
        print("recframe preprocess criteo:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2
    options = Options(has_label=not ns.no_label, pad_short_rows=ns.pad_short_rows, on_error=ns.on_error,
                      max_examples=ns.max_reported_errors, hash_size=ns.hash_size, vocab_threshold=ns.vocab_threshold)
    try:  # an --output URL: written under $TMPDIR, then uploaded with feature_map.json last
        with storage.staged_output(ns.output, marker=FEATURE_MAP) as output:
            fm = preprocess_criteo(ns.input, output, options, workers=ns.workers,
                                   chunk_bytes=int(ns.chunk_mb * 2**20), progress=not ns.quiet)
    except DataError as error:
        print(f"recframe preprocess criteo: {error}", file=sys.stderr)
        return 1
    skipped = SkipReport(KINDS, ns.max_reported_errors)
    for kind, count in fm["skipped"]["counts"].items():
        for message in fm["skipped"]["examples"].get(kind, []):
            skipped.add(kind, message, 0)
        skipped.add(kind, "", count)
    print(f"{ns.output}: {fm['rows']} rows, {fm['id_mode']} ids, {fm['seconds']} s with {ns.workers} worker(s) "
          f"({fm['rows'] / max(fm['seconds'], 1e-9):,.0f} rows/s)")
    print(skipped.summary(", ".join(ns.input)))
    mapping = {"vocab": f" data.id_mapping=vocab data.vocab_threshold={ns.vocab_threshold}",
               "hash": f" data.id_mapping=modulo tables.num_embeddings={ns.hash_size}",
               "raw": " data.id_mapping=modulo"}
    print(f"train with: recframe train +experiment=criteo_kaggle data=criteo_binary data.path={ns.output}"
          f"{mapping[fm['id_mode']]}")
    return 0

"""Data pipeline throughput: Criteo TSV parsing, ``recframe preprocess criteo`` and the batch loaders.

Prints one table, comparable run to run: rows/s (or samples/s) in all, and per core used.

- ``parse``: ``parse_criteo_bytes`` over 4 MiB chunks in this process (TSV -> arrays).
- ``preprocess``: the whole command (read, parse in W processes, write .npy, vocab pass) at W = 1
  and W = ``--workers``.
- ``loader``: ``CriteoBinarySource`` (memmap -> shuffled rows -> ``Batch``) for vocab and raw ids
  (raw: modulo of the table size per batch), the same with ``shuffle_batches`` (contiguous slices),
  and ``CriteoTsvSource`` (in memory), one process.
- ``multihot``: ``CriteoMultiHotSource`` over a directory of ``recframe preprocess multihot
  --synthetic`` with MLPerf's bag sizes (214 ids per sample), batch ``--multihot-batch-size``
  (8192), batch-shuffled epochs: the first pass (pages mapped on first touch) and the passes after.
- ``synthetic``: ``SyntheticCriteo.batch`` (the CPU generator: Zipf ids, hidden-model labels) for
  MLPerf's bag sizes (214 ids/sample) over 26 tables of 4M rows at zipf 0 and 1.05, batch
  ``--multihot-batch-size``, and the one-hot dlrm shape (26 x 100,000, zipf 1.05), batch
  ``--batch-size``: the best of ``--synthetic-batches`` batches.

The input is a Criteo TSV file repeated ``--repeat`` times (default: the Kaggle sample in
../shared/data, else random Criteo-like lines).

Example:
    $ python scripts/bench_data.py --repeat 20 --workers 2
    $ taskset -c 0 python scripts/bench_data.py --stages multihot   # the multi-hot loader on one core
    $ taskset -c 0 python scripts/bench_data.py --stages synthetic  # the synthetic generator on one core
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recframe.data.binary import CriteoBinarySource  # noqa: E402
from recframe.data.criteo import iter_line_chunks, parse_criteo_bytes  # noqa: E402
from recframe.data.multihot import MLPERF_BAG_SIZES, MLPERF_NUM_EMBEDDINGS, CriteoMultiHotSource  # noqa: E402
from recframe.data.multihot_preprocess import synthetic_blocks, write_multihot  # noqa: E402
from recframe.data.preprocess import Options, preprocess_criteo  # noqa: E402
from recframe.data.sources import CriteoTsvSource  # noqa: E402
from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo_kaggle_dac_sample" / "train_examples.txt"
KEYS = [f"cat_{i}" for i in range(26)]
STAGES = ("parse", "preprocess", "loader", "multihot", "synthetic")


def random_tsv(rows: int, seed: int = 0) -> bytes:
    """Criteo-like lines (random counts and 8-digit hex ids, some missing) when the real sample is absent."""
    rng = np.random.default_rng(seed)
    dense = rng.geometric(0.05, size=(rows, 13)) - 1
    cats = rng.zipf(1.3, size=(rows, 26)) % (1 << 32)
    lines = []
    for d, c, missing in zip(dense, cats, rng.random((rows, 26)) < 0.1, strict=True):
        cat_fields = ("" if m else f"{v:08x}" for v, m in zip(c, missing, strict=True))
        fields = [str(int(rng.random() < 0.25)), *map(str, d), *cat_fields]
        lines.append("\t".join(fields))
    return ("\n".join(lines) + "\n").encode()


def timed(fn, repeats: int = 3) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_loader(source, batch_size: int, max_batches: int, first_batch: int = 0) -> float:  # noqa: ANN001
    source.setup()
    dataset = source.train_dataset(rank=0, world_size=1, first_batch=first_batch)
    dataset.begin_pass()
    start, samples = time.perf_counter(), 0
    for k, batch in enumerate(dataset):
        samples += batch.batch_size
        if k + 1 >= max_batches:
            break
    return samples / (time.perf_counter() - start)


def bench_multihot(tmp: Path, rows: int, batch_size: int, passes: int) -> list[tuple[str, int, float, str]]:
    """The multi-hot loader: the first pass over the rows, then the best of the ``passes`` after it."""
    out = tmp / "multihot"
    write_multihot(synthetic_blocks(rows, list(MLPERF_NUM_EMBEDDINGS), seed=0, zipf_exponent=1.05, block_rows=1 << 16),
                   out, list(MLPERF_BAG_SIZES), list(MLPERF_NUM_EMBEDDINGS), seed=0, source={"kind": "synthetic"},
                   progress=False)
    source = CriteoMultiHotSource(str(out), KEYS, batch_size, val_fraction=0.0)
    batches = rows // batch_size
    first = bench_loader(source, batch_size, batches)
    later = max(bench_loader(source, batch_size, batches, first_batch=k * batches) for k in range(1, passes + 1))
    name = f"loader criteo_multihot ({sum(MLPERF_BAG_SIZES)} ids/sample, {batches} batches)"
    return [(f"{name}, first pass", 1, first, "samples/s"), (f"{name}, later passes", 1, later, "samples/s")]


def bench_synthetic(multihot_batch: int, onehot_batch: int, batches: int) -> list[tuple[str, int, float, str]]:
    """``SyntheticCriteo.batch``: the best of ``batches`` batches (indices 0, 1, ...) per shape."""
    shapes = (
        (f"synthetic MLPerf bags ({sum(MLPERF_BAG_SIZES)} ids/sample), 26 x 4M rows, zipf 0, batch {multihot_batch}",
         SyntheticConfig(table_sizes=(4_000_000,) * 26, ids_per_feature=MLPERF_BAG_SIZES, zipf_exponent=0.0),
         multihot_batch),
        (f"synthetic MLPerf bags ({sum(MLPERF_BAG_SIZES)} ids/sample), 26 x 4M rows, zipf 1.05, batch "
         f"{multihot_batch}",
         SyntheticConfig(table_sizes=(4_000_000,) * 26, ids_per_feature=MLPERF_BAG_SIZES, zipf_exponent=1.05),
         multihot_batch),
        (f"synthetic dlrm one-hot, 26 x 100,000 rows, zipf 1.05, batch {onehot_batch}",
         SyntheticConfig(table_sizes=(100_000,) * 26), onehot_batch),
    )
    results = []
    for name, config, batch_size in shapes:
        gen = SyntheticCriteo(config, seed=0)
        best = float("inf")
        for index in range(batches):
            start = time.perf_counter()
            gen.batch(index, batch_size)
            best = min(best, time.perf_counter() - start)
        results.append((name, 1, batch_size / best, "samples/s"))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default=str(SAMPLE) if SAMPLE.is_file() else "", help="a Criteo TSV file")
    p.add_argument("--repeat", type=int, default=10, help="concatenate the input this many times")
    p.add_argument("--random-rows", type=int, default=20000, help="rows of random input when there is no --input")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="preprocess processes")
    p.add_argument("--batch-size", type=int, default=2048, help="loader batch size")
    p.add_argument("--vocab-threshold", type=int, default=2, help="vocab ids of the loader benchmark")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="what to measure")
    p.add_argument("--multihot-rows", type=int, default=8192 * 40, help="rows of the multi-hot directory")
    p.add_argument("--multihot-batch-size", type=int, default=8192, help="multi-hot loader batch size")
    p.add_argument("--multihot-passes", type=int, default=3, help="passes timed after the first")
    p.add_argument("--synthetic-batches", type=int, default=5, help="synthetic batches timed per shape (best kept)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    text = Path(args.input).read_bytes() if args.input else random_tsv(args.random_rows)
    tsv = tmp / "input.txt"
    tsv.write_bytes(text * args.repeat)
    rows = text.count(b"\n") * args.repeat
    size_mb = tsv.stat().st_size / 2**20
    print(f"input: {args.input or 'random lines'} x {args.repeat} = {rows:,} rows, {size_mb:.0f} MiB; "
          f"{len(os.sched_getaffinity(0))} usable cores; numpy {np.__version__}\n")

    results: list[tuple[str, int, float, str]] = []
    if "parse" in args.stages:
        chunks = list(iter_line_chunks(str(tsv)))
        seconds = timed(lambda: [parse_criteo_bytes(c, first_line=f) for c, f in chunks])
        results.append(("parse (TSV bytes -> arrays)", 1, rows / seconds, "rows/s"))
    if "preprocess" in args.stages:
        for workers in sorted({1, args.workers}):
            modes = (("vocab", Options(vocab_threshold=args.vocab_threshold)), ("hash", Options(hash_size=1 << 20)))
            for mode, options in modes:
                out = tmp / f"bin_{mode}_{workers}"
                seconds = timed(lambda o=out, opt=options, w=workers: preprocess_criteo([str(tsv)], o, opt, workers=w,
                                                                                         progress=False), repeats=1)
                results.append((f"preprocess --{mode.replace('hash', 'hash-size')} ...", workers, rows / seconds,
                                "rows/s"))
    if "loader" in args.stages:
        batches = max(1, min(rows // args.batch_size, 50))
        vocab_dir, raw_dir = tmp / "bin_vocab", tmp / "bin_raw"
        preprocess_criteo([str(tsv)], vocab_dir, Options(vocab_threshold=args.vocab_threshold), workers=args.workers,
                          progress=False)
        preprocess_criteo([str(tsv)], raw_dir, Options(), workers=args.workers, progress=False)
        vocab = {"id_mapping": "vocab", "vocab_threshold": args.vocab_threshold}
        for name, source in (
            ("loader criteo_binary vocab (memmap -> shuffled rows -> Batch)",
             CriteoBinarySource(str(vocab_dir), KEYS, [1 << 20] * 26, args.batch_size, 0.0, **vocab)),
            ("loader criteo_binary vocab, shuffle_batches (slices)",
             CriteoBinarySource(str(vocab_dir), KEYS, [1 << 20] * 26, args.batch_size, 0.0, shuffle_batches=True,
                                **vocab)),
            ("loader criteo_binary raw (+ modulo per batch)",
             CriteoBinarySource(str(raw_dir), KEYS, [1 << 20] * 26, args.batch_size, 0.0)),
            ("loader criteo_tsv (in memory -> Batch)",
             CriteoTsvSource(str(tsv), KEYS, [1 << 20] * 26, args.batch_size, 0.01)),
        ):
            results.append((name, 1, bench_loader(source, args.batch_size, batches), "samples/s"))
    if "multihot" in args.stages:
        results.extend(bench_multihot(tmp, args.multihot_rows, args.multihot_batch_size, args.multihot_passes))

    if "synthetic" in args.stages:
        results.extend(bench_synthetic(args.multihot_batch_size, args.batch_size, args.synthetic_batches))

    width = max(len(r[0]) for r in results)
    print(f"{'stage':<{width}}  {'procs':>5}  {'total':>12}  {'per core':>12}  unit")
    for name, procs, rate, unit in results:
        print(f"{name:<{width}}  {procs:>5}  {rate:>12,.0f}  {rate / procs:>12,.0f}  {unit}")
    print(f"\n(batch size {args.batch_size}, multi-hot {args.multihot_batch_size}; preprocess includes reading, "
          "writing and, for vocab, the second pass; shared machines make these numbers noisy)")


if __name__ == "__main__":
    main()

"""Benchmark of the KeyedJaggedTensor ops on a Criteo-sized batch, fbgemm path vs torch path.

Builds a KJT with 26 keys and ``--batch`` samples, once with 1 id per key per sample (Criteo's
one-hot features) and once with 20 (multi-hot), and times permute (a random order of the 26 keys),
split (4 consecutive groups, as for 4 ranks), concat (of those 4 parts) and the host-to-GPU copy
(pinned memory, non_blocking, then a synchronize). Each timed call gets a freshly built KJT, so
derived state (offsets, length_per_key) is computed inside the timing, as it is for a new batch.
Prints a markdown table of the median microseconds per op over ``--repeats`` calls after warmup,
under one header line naming the machine, so runs can be compared.

Usage:
    python scripts/bench_sparse.py [--repeats 30] [--batch 16384]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch

from recframe.sparse import KeyedJaggedTensor
from recframe.sparse.ops import fbgemm_available, use_backend

NUM_KEYS = 26
IDS_PER_KEY = (1, 20)
SPLIT_SIZES = [7, 7, 6, 6]
WARMUP = 3


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fbgemm_version() -> str:
    if not fbgemm_available():
        return "fbgemm_gpu missing"
    import fbgemm_gpu

    return f"fbgemm_gpu {getattr(fbgemm_gpu, '__version__', '?')}"


def make_inputs(batch: int, ids_per_key: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    keys = [f"cat_{i}" for i in range(NUM_KEYS)]
    values = torch.randint(0, 2**40, (NUM_KEYS * batch * ids_per_key,), generator=gen, dtype=torch.int64)
    lengths = torch.full((NUM_KEYS * batch,), ids_per_key, dtype=torch.int32)
    return keys, values, lengths


def median_us(op: Callable[[object], object], setup: Callable[[], object], repeats: int,
              sync: Callable[[], None]) -> float:
    """Median wall time of ``op(setup())`` in microseconds; ``setup`` is not timed."""
    times = []
    for i in range(WARMUP + repeats):
        arg = setup()
        sync()
        start = time.perf_counter_ns()
        op(arg)
        sync()
        if i >= WARMUP:
            times.append((time.perf_counter_ns() - start) / 1e3)
    return statistics.median(times)


def bench(batch: int, ids_per_key: int, backend: str, repeats: int) -> dict[str, float | None]:
    keys, values, lengths = make_inputs(batch, ids_per_key)
    order = torch.randperm(NUM_KEYS, generator=torch.Generator().manual_seed(1)).tolist()

    def fresh() -> KeyedJaggedTensor:
        return KeyedJaggedTensor.from_lengths(keys, values, lengths, stride=batch, validate=False)

    def fresh_parts() -> list[KeyedJaggedTensor]:
        parts, start = [], 0
        for size in SPLIT_SIZES:  # built directly, so that concat's timing holds no split
            lo, hi = start * batch * ids_per_key, (start + size) * batch * ids_per_key
            parts.append(KeyedJaggedTensor.from_lengths(
                keys[start:start + size], values[lo:hi], lengths[start * batch:(start + size) * batch],
                stride=batch, validate=False))
            start += size
        return parts

    def no_sync() -> None:
        pass

    results: dict[str, float | None] = {}
    with use_backend(backend):
        results["permute"] = median_us(lambda k: k.permute(order), fresh, repeats, no_sync)
        results["split"] = median_us(lambda k: k.split(SPLIT_SIZES), fresh, repeats, no_sync)
        results["concat"] = median_us(KeyedJaggedTensor.concat, fresh_parts, repeats, no_sync)
        if torch.cuda.is_available():
            cuda = torch.device("cuda")
            results["to(cuda) from pinned"] = median_us(
                lambda k: k.to(cuda, non_blocking=True), lambda: fresh().pin_memory(), repeats,
                torch.cuda.synchronize)
        else:
            results["to(cuda) from pinned"] = None
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per op (after warmup)")
    parser.add_argument("--batch", type=int, default=16384, help="samples per batch (the KJT stride)")
    args = parser.parse_args(argv)

    backends = ["fbgemm", "torch"] if fbgemm_available() else ["torch"]
    rows = []
    for ids_per_key in IDS_PER_KEY:
        per_backend = {b: bench(args.batch, ids_per_key, b, args.repeats) for b in backends}
        for op in per_backend[backends[0]]:
            rows.append((op, ids_per_key, [per_backend.get(b, {}).get(op) for b in ("fbgemm", "torch")]))

    today = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"**bench_sparse** | {cpu_model()} ({torch.get_num_threads()} threads) | torch {torch.__version__} | "
          f"{fbgemm_version()} | {today} | {NUM_KEYS} keys, batch {args.batch}, int64 ids, int32 lengths | "
          f"median µs of {args.repeats} calls after {WARMUP} warmup")
    print()
    print("| op | ids per key | fbgemm µs | torch µs |")
    print("|---|---:|---:|---:|")

    def cell(x: float | None) -> str:
        return "n/a" if x is None else f"{x:,.0f}"

    for op, ids_per_key, (fb, th) in rows:
        print(f"| {op} | {ids_per_key} | {cell(fb)} | {cell(th)} |")


if __name__ == "__main__":
    main()

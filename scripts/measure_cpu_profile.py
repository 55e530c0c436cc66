"""Measure this CPU's step-simulator profile: sgemm GFLOP/s and gloo all-to-all latency and bandwidth (issue 24).

Usage:
    python scripts/measure_cpu_profile.py [--processes 2] [--threads 2]

Prints one line per measurement, in the units of ``recframe.distributed.planner.simulate.DeviceProfile``
(``matmul_tflops``, ``latency_us``, ``intra_node_gbps``):

- sgemm: ``torch.mm`` of fp32 ``[2048, 512] x [512, 512]`` (a DLRM MLP layer at batch 2048), median of 20;
- gloo: ``all_to_all_single`` among ``--processes`` local processes, equal splits of 8 KB to 32 MB per peer,
  median of 10 each; latency = the smallest message's time, bandwidth = bytes a rank sends to its peers
  over the largest message's time (the simulator divides each rank's sent bytes by it).

On a shared 2-core VM, expect +-30% between runs: take the median of a few.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [2**13, 2**16, 2**19, 2**22, 2**25]  # bytes per peer


def sgemm_gflops(repeats: int = 20) -> float:
    """Median GFLOP/s of a ``[2048, 512] x [512, 512]`` fp32 product."""
    a, b = torch.randn(2048, 512), torch.randn(512, 512)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * 2048 * 512 * 512 / statistics.median(times[2:]) / 1e9


def _all_to_all_worker(rank: int, world: int, store_path: str, results: dict) -> None:
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    out = {}
    for size in SIZES:
        send = torch.zeros(size // 4 * world)
        recv = torch.empty_like(send)
        times = []
        for _ in range(12):
            dist.barrier()
            start = time.perf_counter()
            dist.all_to_all_single(recv, send)
            times.append(time.perf_counter() - start)
        out[size] = statistics.median(times[2:])
    if rank == 0:
        results.update(out)
    dist.destroy_process_group()


def gloo_all_to_all(world: int) -> dict[int, float]:
    """Median seconds of one all-to-all of ``size`` bytes per peer, for each of ``SIZES``."""
    manager = mp.Manager()
    results = manager.dict()
    store = os.path.join(tempfile.mkdtemp(), "store")
    mp.spawn(_all_to_all_worker, args=(world, store, results), nprocs=world, join=True)
    return dict(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for sgemm (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"sgemm: {sgemm_gflops():.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    times = gloo_all_to_all(args.processes)
    peers = args.processes - 1
    for size, seconds in sorted(times.items()):
        print(f"gloo all_to_all, {args.processes} processes, {size / 1e6:.3f} MB per peer: {seconds * 1e3:.3f} ms "
              f"({size * peers / seconds / 1e9:.2f} GB/s sent per rank)")
    largest = max(times)
    print(f"latency_us={times[min(times)] * 1e6:.0f} intra_node_gbps={largest * peers / times[largest] / 1e9:.2f}")


if __name__ == "__main__":
    main()

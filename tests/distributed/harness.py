"""A small multi-process gloo harness: spawn ``world_size`` CPU processes, run a worker, collect results.

Each process joins a gloo group through a FileStore in the test's tmp_path (no free port needed)
with a 60 s timeout, runs ``worker(rank, world_size, *args)`` and saves its return value to
``<tmp>/result_<rank>.pt``; ``run_workers`` returns the list of results, rank 0's first. A
worker's exception fails the test with its traceback (``torch.multiprocessing.spawn``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world_size: int, directory: str, worker: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(1)  # the processes share a small machine
    store = dist.FileStore(os.path.join(directory, "store"), world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        result = worker(rank, world_size, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, os.path.join(directory, f"result_{rank}.pt"))


def run_workers(tmp_path: Path, world_size: int, worker: Callable[..., Any], *args: Any) -> list[Any]:
    """Run ``worker(rank, world_size, *args)`` on ``world_size`` gloo processes; their return values by rank.

    Args:
        tmp_path: a fresh directory (pytest's ``tmp_path``).
        world_size: number of processes.
        worker: a module-level function (it is pickled by name).
        args: extra arguments, picklable.
    """
    directory = str(tmp_path)
    mp.spawn(_entry, args=(world_size, directory, worker, args), nprocs=world_size, join=True)
    return [torch.load(os.path.join(directory, f"result_{r}.pt"), weights_only=False) for r in range(world_size)]

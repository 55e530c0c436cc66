"""A checkpoint write or load that fails on one rank only fails promptly on every rank, with the same error."""

from __future__ import annotations

import builtins
import errno
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from recframe import storage
from recframe.training.checkpoint import reader, writer
from recframe.training.checkpoint.folder import CheckpointReadError, CheckpointWriteError, find_last
from tests.distributed.harness import run_workers

pytestmark = pytest.mark.distributed


def state(step: int) -> dict[str, Any]:
    return {"state_dict": {"model.w": torch.full((3,), float(step))}, "global_step": step}


def full_disk_worker(rank: int, world: int, root: str) -> tuple[str, float, str]:
    writer.save(state(2), Path(root), 2, layout=None, keep_last=1)
    real_open = builtins.open

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if rank == 0 and str(path).endswith(writer.STATE_JSON) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    storage.open = full_open  # type: ignore[attr-defined]  # the name storage.write_bytes looks up in its module
    start = time.monotonic()
    try:
        writer.save(state(4), Path(root), 4, layout=None, keep_last=1)
        return "saved", time.monotonic() - start, ""
    except CheckpointWriteError as error:
        return type(error).__name__, time.monotonic() - start, str(error)
    finally:
        del storage.open  # type: ignore[attr-defined]


def test_only_rank_0_failing_to_write_fails_every_rank_at_once(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    results = run_workers(tmp_path, 2, full_disk_worker, str(root))
    for rank, (kind, elapsed, message) in enumerate(results):
        assert kind == "CheckpointWriteError", f"rank {rank}: {kind}"
        assert elapsed < 20, f"rank {rank} took {elapsed:.1f} s (the group's timeout is 60 s)"
        assert f"step 4 into {root}" in message and "rank 0: OSError" in message and "No space left" in message
        assert f"{root / 'step-2'}, is intact" in message
    assert sorted(p.name for p in root.iterdir()) == ["step-2"]
    loaded, _ = reader.load(find_last(root).folder, layout=None)
    assert torch.equal(loaded["state_dict"]["model.w"], torch.full((3,), 2.0))


def damaged_on_rank_1_worker(rank: int, world: int, root: str) -> tuple[str, float, str]:
    folder = writer.save(state(2), Path(root), 2, layout=None, keep_last=1)
    real_read_manifest = reader.read_manifest

    def damaged(path: Path) -> Any:
        if rank == 1:
            raise ValueError(f"{path}: __0_0.distcp has 1 bytes, the manifest says 9 (truncated or damaged)")
        return real_read_manifest(path)

    reader.read_manifest = damaged  # type: ignore[assignment]  # as if rank 1 saw another copy of the folder
    start = time.monotonic()
    try:
        reader.load(folder, layout=None)
        return "loaded", time.monotonic() - start, ""
    except CheckpointReadError as error:
        return type(error).__name__, time.monotonic() - start, str(error)
    finally:
        reader.read_manifest = real_read_manifest  # type: ignore[assignment]


def test_a_load_failing_on_rank_1_only_fails_every_rank_at_once(tmp_path: Path) -> None:
    results = run_workers(tmp_path, 2, damaged_on_rank_1_worker, str(tmp_path / "checkpoints"))
    for rank, (kind, elapsed, message) in enumerate(results):
        assert kind == "CheckpointReadError", f"rank {rank}: {kind}"
        assert elapsed < 20, f"rank {rank} took {elapsed:.1f} s (the group's timeout is 60 s)"
        assert "step-2" in message and "truncated or damaged" in message

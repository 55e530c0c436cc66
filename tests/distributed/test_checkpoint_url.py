"""Two gloo ranks save and load checkpoints at a ``file://`` URL (fsspec; the manifest is the commit marker).

Each rank writes its own RNG states and DCP file into ``step-N/`` in place; rank 0 writes the manifest after
every rank is done; ``keep_last`` prunes; both ranks load the newest and get their own RNG states back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recframe.training.checkpoint.folder import find_last
from recframe.training.checkpoint.reader import load
from recframe.training.checkpoint.writer import save
from tests.distributed.harness import run_workers

pytestmark = pytest.mark.distributed


def worker(rank: int, world: int, root: str) -> tuple[list[str], float, list[float], int]:
    for step in (2, 4, 6):
        torch.manual_seed(100 * rank + step)
        save({"state_dict": {"model.w": torch.full((3,), float(step))}, "global_step": step}, root, step,
             layout=None, keep_last=2)
    last = find_last(root)
    loaded, saved = load(last.folder, layout=None)
    return ([str(last.folder)], float(loaded["state_dict"]["model.w"][0]), loaded["rng"]["torch"][:4].tolist(),
            saved["world_size"])


def test_two_ranks_save_and_load_at_a_file_url(tmp_path: Path) -> None:
    root = f"file://{tmp_path}/bucket/checkpoints"
    results = run_workers(tmp_path, 2, worker, root)
    assert [r[0] for r in results] == [[f"{root}/step-6"]] * 2
    assert [r[1] for r in results] == [6.0, 6.0] and [r[3] for r in results] == [2, 2]
    assert results[0][2] != results[1][2], "each rank gets its own RNG state back"
    folders = sorted(p.name for p in (tmp_path / "bucket" / "checkpoints").iterdir())
    assert folders == ["step-4", "step-6"], "keep_last=2; no .tmp folder on a URL"
    files = sorted(p.name for p in (tmp_path / "bucket" / "checkpoints" / "step-6").iterdir())
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "manifest.json", "state.json"]

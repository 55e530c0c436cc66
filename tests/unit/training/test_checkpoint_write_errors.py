"""A checkpoint that cannot be written (full disk, unusable folder) is a clear error; the last good one stays."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from recframe.training.checkpoint import writer
from recframe.training.checkpoint.folder import CheckpointWriteError, find_last
from recframe.training.checkpoint.reader import load
from recframe.training.checkpoint.writer import save


def state(step: int) -> dict:
    return {"state_dict": {"model.w": torch.full((3, 2), float(step))}, "global_step": step}


def test_full_disk_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    save(state(4), root, 4, layout=None, keep_last=1)

    def full_disk(self: dcp.FileSystemWriter, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dcp.FileSystemWriter, "write_data", full_disk)
    with pytest.raises(CheckpointWriteError) as error:
        save(state(8), root, 8, layout=None, keep_last=1)
    message = str(error.value)
    assert str(root) in message and "No space left on device" in message and "step 8" in message
    assert f"{root / 'step-4'}, is intact" in message
    assert sorted(p.name for p in root.iterdir()) == ["step-4"], "the temporary folder is removed"
    last = find_last(root)
    assert last.step == 4
    loaded, _ = load(last.folder, layout=None)
    assert torch.equal(loaded["state_dict"]["model.w"], torch.full((3, 2), 4.0))


def test_unusable_folder_is_named(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    root.write_text("a file where the checkpoint folder should be")
    with pytest.raises(CheckpointWriteError, match=f"cannot write a checkpoint into {root}: .*No earlier"):
        save(state(2), root, 2, layout=None, keep_last=1)


def test_saving_the_same_step_twice_keeps_the_first(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    first = save(state(5), root, 5, layout=None, keep_last=2)
    again = save(state(6), root, 5, layout=None, keep_last=2)
    assert first == again
    loaded, _ = load(first, layout=None)
    assert loaded["global_step"] == 5


def test_resuming_from_an_older_checkpoint_keeps_what_it_writes(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    save(state(10), root, 10, layout=None, keep_last=2)
    save(state(20), root, 20, layout=None, keep_last=2)
    written = save(state(12), root, 12, layout=None, keep_last=1)  # resumed from step-10
    assert sorted(p.name for p in root.iterdir()) == ["step-12", "step-20"]
    loaded, _ = load(written, layout=None)
    assert loaded["global_step"] == 12


def test_a_damaged_folder_of_the_same_step_is_an_error_not_saved(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    folder = save(state(20), root, 20, layout=None, keep_last=2)
    data = next(folder.glob("*.distcp"))
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CheckpointWriteError, match=f"{folder} exists and is damaged.*truncated"):
        save(state(20), root, 20, layout=None, keep_last=2)


def test_a_folder_of_the_same_step_from_another_run_is_not_taken_for_this_one(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    folder = save(state(20), root, 20, layout=None, keep_last=2)
    writer._WRITTEN.discard(folder.resolve())  # as if an earlier process had written it
    with pytest.raises(CheckpointWriteError, match=f"{folder} exists already, written by another run"):
        save(state(20), root, 20, layout=None, keep_last=2)

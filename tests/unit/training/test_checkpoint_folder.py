"""Checkpoint folders: atomic commit, manifest checks, ``last`` selection, pruning of recframe's own folders only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recframe.training.checkpoint.folder import (
    commit,
    find_last,
    new_temp_folder,
    prune,
    read_manifest,
    set_aside_newer,
    write_manifest,
)


def make_checkpoint(root: Path, step: int, payload: bytes = b"data") -> Path:
    temp = new_temp_folder(root, step, f"{step:08x}")
    (temp / "__0_0.distcp").write_bytes(payload)
    write_manifest(temp, {"global_step": step})
    commit(temp, root / f"step-{step}")
    return root / f"step-{step}"


def test_commit_renames_the_finished_folder_and_the_manifest_lists_files(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path, 4, b"12345")
    assert not list(tmp_path.glob(".tmp-*"))
    manifest = read_manifest(folder)
    assert manifest["global_step"] == 4 and manifest["files"] == {"__0_0.distcp": 5}


def test_a_checkpoint_is_never_overwritten(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 4)
    temp = new_temp_folder(tmp_path, 4, "deadbeef")
    with pytest.raises(FileExistsError, match="never overwritten"):
        commit(temp, tmp_path / "step-4")


def test_last_is_the_newest_complete_one_and_says_why_newer_ones_are_skipped(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 8)
    new_temp_folder(tmp_path, 12, "0badc0de")  # a writer killed before the rename
    unfinished = tmp_path / "step-16"  # a folder without manifest (e.g. copied by hand, partly)
    unfinished.mkdir()
    truncated = make_checkpoint(tmp_path, 20, b"0123456789")
    (truncated / "__0_0.distcp").write_bytes(b"01234")
    last = find_last(tmp_path)
    assert last.folder == tmp_path / "step-8" and last.step == 8
    assert len(last.skipped) == 3
    assert "step-20" in last.skipped[0] and "truncated" in last.skipped[0]
    assert "step-16" in last.skipped[1] and "not finished" in last.skipped[1]
    assert ".tmp-step-12-0badc0de" in last.skipped[2] and "stopped while writing" in last.skipped[2]


def test_last_of_nothing(tmp_path: Path) -> None:
    assert find_last(tmp_path / "missing").folder is None
    new_temp_folder(tmp_path, 3, "00000000")
    last = find_last(tmp_path)
    assert last.folder is None and len(last.skipped) == 1


def test_manifest_of_another_format_or_missing_file_is_refused(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path, 2)
    (folder / "__0_0.distcp").unlink()
    with pytest.raises(ValueError, match="missing"):
        read_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "other", "files": {}}))
    with pytest.raises(ValueError, match="not a recframe-dcp/1"):
        read_manifest(folder)


def test_prune_keeps_the_newest_and_touches_only_recframe_folders(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        make_checkpoint(tmp_path, step)
    stale = new_temp_folder(tmp_path, 5, "abcdef01")  # superseded leftover of a killed writer
    (tmp_path / "step-best").mkdir()  # the user's own folders and files
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "step-3.bak").mkdir()
    removed = prune(tmp_path, 2, tmp_path / "step-8")
    assert sorted(p.name for p in removed) == sorted(["step-2", "step-4", stale.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "step-3.bak", "step-6", "step-8", "step-best"]
    with pytest.raises(ValueError):
        prune(tmp_path, 0, tmp_path / "step-8")


def test_prune_after_resuming_from_an_older_step_keeps_the_new_checkpoint(tmp_path: Path) -> None:
    for step in (10, 20):
        make_checkpoint(tmp_path, step)
    future_temp = new_temp_folder(tmp_path, 25, "0000abcd")  # of the abandoned run: not ours to judge
    current = make_checkpoint(tmp_path, 12)  # resumed from step-10, wrote step 12
    removed = prune(tmp_path, 1, current)
    assert [p.name for p in removed] == ["step-10"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [future_temp.name, "step-12", "step-20"]


def test_prune_counts_only_complete_checkpoints(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 4)
    damaged = make_checkpoint(tmp_path, 8, b"0123456789")
    (damaged / "__0_0.distcp").write_bytes(b"01")
    newer_damaged = make_checkpoint(tmp_path, 20, b"0123456789")
    (newer_damaged / "__0_0.distcp").write_bytes(b"01")
    current = make_checkpoint(tmp_path, 12)
    assert prune(tmp_path, 2, current) == [], "step-4 is the one complete checkpoint before step-12"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-12", "step-20", "step-4", "step-8"]
    assert [p.name for p in prune(tmp_path, 1, current)] == ["step-4"]
    assert read_manifest(current)["global_step"] == 12


def test_temp_token_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="8 hex digits"):
        new_temp_folder(tmp_path, 1, "../../x")


def test_resuming_sets_the_abandoned_newer_checkpoints_aside(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        make_checkpoint(tmp_path, step)
    (tmp_path / "step-25").mkdir()  # damaged: no manifest
    new_temp_folder(tmp_path, 30, "0badc0de")  # unfinished
    (tmp_path / "notes").mkdir()  # a user's folder
    moved = set_aside_newer(tmp_path, 10)
    assert sorted(p.name.rsplit("-", 1)[0] for p in moved) == [
        "abandoned-step-15", "abandoned-step-20", "abandoned-step-25", "abandoned-tmp-step-30-0badc0de"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("abandoned-")) == [
        "notes", "step-10", "step-5"]
    assert find_last(tmp_path).folder == tmp_path / "step-10"
    assert all((p / "manifest.json").is_file() for p in moved if "step-15" in p.name or "step-20" in p.name)
    assert set_aside_newer(tmp_path, 10) == []  # idempotent: a second rank finds nothing to move
    make_checkpoint(tmp_path, 15)  # the resumed run writes its own step-15 and keeps going
    assert find_last(tmp_path).folder == tmp_path / "step-15"
    assert prune(tmp_path, 1, tmp_path / "step-15") and all(p.is_dir() for p in moved)

"""Checkpoints at an fsspec URL (``memory://``, ``file://``): DCP's fsspec writer/reader, the manifest as commit marker.

On a URL there is no atomic rename: ``step-N/`` is written in place and ``manifest.json``, written last, commits
it. These tests show that a folder without it is passed over by ``last`` and pruned once a newer one is
committed, that ``keep_last`` and setting aside work there, and that the safety checks still refuse crafted files.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch

from recframe import storage
from recframe.training.checkpoint.folder import find_last, prune, set_aside_newer, write_manifest
from recframe.training.checkpoint.plugin import DistributedCheckpointIO
from recframe.training.checkpoint.reader import load
from recframe.training.checkpoint.safety import UnsafeCheckpointError
from recframe.training.checkpoint.writer import save


def state(step: int) -> dict:
    return {"state_dict": {"model.w": torch.full((3, 2), float(step))}, "global_step": step,
            "sparse_optimizer": {"emb": {"t": {"momentum1": torch.arange(4.0) + step}}}, "loops": {"a": [step]}}


@pytest.fixture
def root() -> Iterator[str]:
    """A fresh ``memory://`` checkpoints folder, removed afterwards (the in-memory store lives in this process)."""
    url = f"memory://recframe-test-{uuid.uuid4().hex[:8]}/run/checkpoints"
    yield url
    storage.rmtree(url.rsplit("/run", 1)[0])


def names(url: str) -> list[str]:
    return [name for name, _ in storage.children(url)]


def test_save_and_load_round_trip_on_memory(root: str) -> None:
    folder = save(state(4), root, 4, layout=None, keep_last=2, config_text="x: 1")
    assert folder == f"{root}/step-4"
    assert names(folder)[-1] == "state.json" and "manifest.json" in names(folder) and ".metadata" in names(folder)
    loaded, saved = load(folder, layout=None)
    assert torch.equal(loaded["state_dict"]["model.w"], torch.full((3, 2), 4.0))
    assert torch.equal(loaded["sparse_optimizer"]["emb"]["t"]["momentum1"], torch.arange(4.0) + 4)
    assert loaded["global_step"] == 4 and loaded["loops"] == {"a": [4]} and saved["config"] == "x: 1"
    assert "torch" in loaded["rng"]


def test_keep_last_and_last_on_memory(root: str) -> None:
    for step in (2, 4, 6):
        save(state(step), root, step, layout=None, keep_last=2)
    assert names(root) == ["step-4", "step-6"], "keep_last=2 deleted step-2"
    last = find_last(root)
    assert (last.folder, last.step, last.skipped) == (f"{root}/step-6", 6, [])


def test_a_folder_without_manifest_is_passed_over_and_pruned(root: str) -> None:
    save(state(4), root, 4, layout=None, keep_last=3)
    fs = fsspec.filesystem("memory")
    # A writer killed before its manifest: data files of step 6 and step 8 in place, no commit marker.
    for step in (6, 8):
        fs.pipe(storage.join(root, f"step-{step}", "__0_0.distcp").removeprefix("memory://"), b"partial")
    last = find_last(root)
    assert last.step == 4 and len(last.skipped) == 2
    assert all("has no manifest.json: it was not finished" in reason for reason in last.skipped)
    # A resume from step 4 sets step-6 and step-8 aside (kept, never read), then writes its own step-6.
    moved = set_aside_newer(root, 4)
    assert sorted(storage.name(m).rsplit("-", 1)[0] for m in moved) == ["abandoned-step-6", "abandoned-step-8"]
    save(state(6), root, 6, layout=None, keep_last=3)
    assert find_last(root).step == 6
    loaded, _ = load(find_last(root).folder, layout=None)
    assert loaded["global_step"] == 6
    # An unfinished step-N older than a new commit is a leftover (on a URL there is no .tmp folder): pruned.
    fs.pipe(storage.join(root, "step-7", "__0_0.distcp").removeprefix("memory://"), b"partial")
    save(state(9), root, 9, layout=None, keep_last=3)
    assert [n for n in names(root) if n.startswith("step-")] == ["step-4", "step-6", "step-9"]


def test_a_damaged_folder_with_a_manifest_is_kept(root: str) -> None:
    folder = save(state(4), root, 4, layout=None, keep_last=1)
    data = next(name for name in names(folder) if name.endswith(".distcp"))
    path = storage.join(folder, data)
    storage.write_bytes(path, storage.read_bytes(path)[:10])
    assert find_last(root).folder is None and "truncated or damaged" in find_last(root).skipped[0]
    save(state(6), root, 6, layout=None, keep_last=1)
    assert names(root) == ["step-4", "step-6"], "a damaged checkpoint is never deleted (a person decides)"


def test_the_lightning_plugin_writes_and_reads_a_url(root: str) -> None:
    io = DistributedCheckpointIO(keep_last=1, config_text="x: 1")
    io.save_checkpoint(state(3), f"{root}/step-3")
    loaded = io.load_checkpoint(f"{root}/step-3")
    assert loaded["global_step"] == 3 and "rng" not in loaded, "the RNG states were restored and taken out"
    io.remove_checkpoint(f"{root}/step-3")
    assert names(root) == []


def test_a_crafted_metadata_on_a_url_is_refused_and_does_not_run(root: str, tmp_path: Path) -> None:
    folder = save(state(3), root, 3, layout=None, keep_last=1)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    storage.write_bytes(storage.join(folder, ".metadata"), pickle.dumps(Payload()))
    fsspec.filesystem("memory").rm(storage.join(folder, "manifest.json").removeprefix("memory://"))
    write_manifest(folder, {"global_step": 3})  # the attacker makes the manifest match
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        load(folder, layout=None)
    assert not marker.exists()


def test_a_file_url_goes_through_fsspec_with_the_same_rules(tmp_path: Path) -> None:
    root = f"file://{tmp_path}/checkpoints"
    for step in (2, 4):
        save(state(step), root, step, layout=None, keep_last=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4"]
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
    last = find_last(root)
    loaded, _ = load(last.folder, layout=None)
    assert last.step == 4 and torch.equal(loaded["state_dict"]["model.w"], torch.full((3, 2), 4.0))
    assert prune(root, 1, f"{root}/step-4") == []

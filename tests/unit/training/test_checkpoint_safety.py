"""Loading a checkpoint runs no code from it: crafted .metadata or pickled values are refused, nothing executes."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from recframe.training.checkpoint.folder import write_manifest
from recframe.training.checkpoint.reader import load
from recframe.training.checkpoint.safety import (
    RestrictedUnpickler,
    SafeLoadPlanner,
    UnsafeCheckpointError,
    read_metadata_file,
)
from recframe.training.checkpoint.tree import decode, encode
from recframe.training.checkpoint.writer import save


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def small_checkpoint(root: Path) -> Path:
    state = {"state_dict": {"model.w": torch.arange(6.0).view(2, 3)}, "global_step": 3, "loops": {"a": (1, 2)},
             "sparse_optimizer": {"emb": {"t": {"momentum1": torch.ones(4)}}}}
    return save(state, root, 3, layout=None, keep_last=2, config_text="x: 1")


def refresh_manifest(folder: Path) -> None:
    """What an attacker would do too: make the manifest match the tampered files."""
    (folder / "manifest.json").unlink()
    write_manifest(folder, {"global_step": 3})


def test_a_real_checkpoint_round_trips(tmp_path: Path) -> None:
    folder = small_checkpoint(tmp_path)
    loaded, saved = load(folder, layout=None)
    assert torch.equal(loaded["state_dict"]["model.w"], torch.arange(6.0).view(2, 3))
    assert torch.equal(loaded["sparse_optimizer"]["emb"]["t"]["momentum1"], torch.ones(4))
    assert loaded["global_step"] == 3 and loaded["loops"] == {"a": (1, 2)}
    assert saved["config"] == "x: 1"
    assert "torch" in loaded["rng"]


def test_pickle_payload_in_metadata_is_refused_and_does_not_run(tmp_path: Path) -> None:
    folder = small_checkpoint(tmp_path / "ck")
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    refresh_manifest(folder)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        load(folder, layout=None)
    assert not marker.exists()


def test_pickled_value_in_the_checkpoint_is_refused_and_does_not_run(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    folder = small_checkpoint(tmp_path / "ck")
    marker = tmp_path / "pwned"
    # Rewrite the folder as DCP would store a non-tensor value: a torch.save pickle that runs code on load.
    dcp.save({"state_dict/model.w": torch.zeros(2, 3), "evil": Payload(marker)},
             storage_writer=dcp.FileSystemWriter(str(folder), sync_files=False))
    (folder / "state.json").write_text(json.dumps({"checkpoint": {"x": {"__tensor__": "evil"}}, "config": None}))
    refresh_manifest(folder)
    with pytest.raises(UnsafeCheckpointError, match="'evil' is a pickled value"):
        load(folder, layout=None)
    assert not marker.exists()


def test_the_load_planner_never_unpickles_values(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    buffer.seek(0)

    class Item:
        class dest_index:  # noqa: N801 (mimics DCP's ReadItem)
            fqn = "evil"

    with pytest.raises(UnsafeCheckpointError, match="pickled value"):
        SafeLoadPlanner().load_bytes(Item(), buffer)  # type: ignore[arg-type]
    assert not marker.exists()


def test_data_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = small_checkpoint(tmp_path / "ck")
    metadata = read_metadata_file(folder / ".metadata")
    for info in metadata.storage_data.values():
        info.relative_path = "../../etc/passwd"
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint folder"):
        read_metadata_file(folder / ".metadata")


def test_restricted_unpickler_builds_only_allowed_globals() -> None:
    assert RestrictedUnpickler(io.BytesIO(pickle.dumps(torch.Size([2]))), "x").load() == torch.Size([2])
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(eval)), "x").load()


def test_only_tensors_and_json_values_are_saved() -> None:
    tensors: dict[str, torch.Tensor] = {}
    tree = {"a": [1, 2.5, None, "s", (3, torch.ones(1))], 7: {"b": True}}
    encoded = encode(tree, "", tensors)
    assert list(tensors) == ["a/4/1"]
    assert decode(json.loads(json.dumps(encoded)), tensors) == tree
    with pytest.raises(TypeError, match="checkpoint entry x/obj is a .*Payload"):
        encode({"x": {"obj": Payload(Path("never"))}}, "", {})


def test_a_crafted_export_file_is_refused_and_does_not_run(tmp_path: Path) -> None:
    from recframe.training.export import FORMAT, load_exported

    marker = tmp_path / "pwned"
    torch.save({"format": FORMAT, "config": "", "state_dict": {}, "x": Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_exported(tmp_path / "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.uint16, torch.complex64, torch.float8_e4m3fn])
def test_tensors_of_any_dtype_round_trip(tmp_path: Path, dtype: torch.dtype) -> None:
    value = torch.arange(4).to(dtype)
    folder = save({"state_dict": {"w": value}}, tmp_path, 1, layout=None, keep_last=1)
    loaded, _ = load(folder, layout=None)
    assert loaded["state_dict"]["w"].dtype == dtype
    assert torch.equal(loaded["state_dict"]["w"].view(torch.uint8), value.view(torch.uint8))


def test_torch_names_that_are_not_dtypes_are_refused() -> None:
    with pytest.raises(UnsafeCheckpointError, match="torch.load"):
        RestrictedUnpickler(io.BytesIO(b"ctorch\nload\n."), "x").load()

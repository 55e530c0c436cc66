"""A damaged or crafted checkpoint is refused with what is wrong and what to do (issue 17, item 5): a truncated
data file (its manifest made to match), state.json naming a tensor the index does not hold, a tensor slot holding
a pickle; never torch's own advice to load unsafely."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from recframe.training.checkpoint.folder import CheckpointReadError
from recframe.training.checkpoint.reader import load
from recframe.training.checkpoint.safety import UnsafeCheckpointError, read_metadata_file
from tests.unit.training.test_checkpoint_safety import Payload, refresh_manifest, small_checkpoint


def test_a_truncated_data_file_is_named_with_the_first_tensor_cut_off(tmp_path: Path) -> None:
    folder = small_checkpoint(tmp_path / "ck")
    data = next(folder.glob("*.distcp"))
    data.write_bytes(data.read_bytes()[:2000])  # inside the second tensor
    refresh_manifest(folder)  # the manifest's sizes match the cut file: only the index knows
    with pytest.raises(CheckpointReadError) as error:
        load(folder, layout=None)
    message = str(error.value)
    assert message.startswith(f"{data} is truncated: 2000 bytes, its index (.metadata) needs ")
    assert "(from 'sparse_optimizer/emb/t/momentum1' on)" in message and "load another checkpoint" in message
    data.unlink()
    refresh_manifest(folder)
    with pytest.raises(CheckpointReadError, match=f"{data} is missing, though the checkpoint's index"):
        load(folder, layout=None)


def test_state_json_naming_a_missing_tensor_says_so(tmp_path: Path) -> None:
    folder = small_checkpoint(tmp_path / "ck")
    saved = json.loads((folder / "state.json").read_text())
    saved["checkpoint"]["extra"] = {"__tensor__": "nope"}
    (folder / "state.json").write_text(json.dumps(saved))
    refresh_manifest(folder)
    with pytest.raises(CheckpointReadError, match=r"state.json names the tensor 'nope', which the checkpoint's index "
                                                  r"\(.metadata\) does not hold: .*load another checkpoint"):
        load(folder, layout=None)


def test_a_pickle_in_a_tensor_slot_is_refused_without_unsafe_advice(tmp_path: Path) -> None:
    folder = small_checkpoint(tmp_path / "ck")
    marker = tmp_path / "pwned"
    data = next(folder.glob("*.distcp"))
    buffer = io.BytesIO()
    torch.save({"w": Payload(marker)}, buffer)
    offset = data.stat().st_size
    data.write_bytes(data.read_bytes() + buffer.getvalue())
    metadata = read_metadata_file(folder / ".metadata")
    for index, info in metadata.storage_data.items():
        if index.fqn == "state_dict/model.w":
            info.offset, info.length = offset, len(buffer.getvalue())
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    refresh_manifest(folder)
    with pytest.raises(UnsafeCheckpointError) as error:
        load(folder, layout=None)
    assert "refused" in str(error.value) and "weights_only" not in str(error.value)
    assert not marker.exists()


def test_a_crafted_export_gets_recframes_message_not_torchs(tmp_path: Path) -> None:
    from recframe.training.export import FORMAT, load_exported

    marker = tmp_path / "pwned"
    torch.save({"format": FORMAT, "config": "", "state_dict": {}, "x": Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError) as error:
        load_exported(tmp_path / "model.pt")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'model.pt'} asks for objects other than tensors") and "refused" in message
    assert "weights_only" not in message and not marker.exists()

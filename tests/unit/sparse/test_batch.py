"""Batch survives what a training loop does to it: pickling (DataLoader workers), Batch.to, and
Lightning's batch transfer (move_data_to_device, the LightningModule hook), on both op paths."""

from __future__ import annotations

import dataclasses
import pickle

import torch
from hypothesis import given
from hypothesis import strategies as st

from recframe.sparse import Batch

from .strategies import SETTINGS, RefKJT, assert_kjt_matches, cut, distinct_floats, kjt_from_ref, needs_cuda, ref_kjts


@dataclasses.dataclass
class RefBatch:
    dense: list[list[float]]  # [B][n_dense]
    n_dense: int
    kjt: RefKJT
    labels: list  # [B] floats, or [B][T] floats
    num_tasks: int | None  # None: labels of shape [B]


@st.composite
def ref_batches(draw) -> RefBatch:
    kjt = draw(ref_kjts())
    b = kjt.stride
    n_dense = draw(st.integers(0, 3))
    dense = cut(draw(distinct_floats(b * n_dense)), [n_dense] * b)
    num_tasks = draw(st.one_of(st.none(), st.integers(1, 3)))
    label = st.sampled_from([0.0, 1.0])
    if num_tasks is None:
        labels = draw(st.lists(label, min_size=b, max_size=b))
    else:
        labels = [draw(st.lists(label, min_size=num_tasks, max_size=num_tasks)) for _ in range(b)]
    return RefBatch(dense, n_dense, kjt, labels, num_tasks)


def batch_from_ref(ref: RefBatch) -> Batch:
    b = ref.kjt.stride
    labels = torch.tensor(ref.labels, dtype=torch.float32)
    labels = labels.reshape(b) if ref.num_tasks is None else labels.reshape(b, ref.num_tasks)
    return Batch(
        dense_features=torch.tensor(ref.dense, dtype=torch.float32).reshape(b, ref.n_dense),
        sparse_features=kjt_from_ref(ref.kjt),
        labels=labels,
    )


def assert_batch_matches(batch, ref: RefBatch, device_type: str = "cpu") -> None:
    assert isinstance(batch, Batch), type(batch)
    b = ref.kjt.stride
    assert batch.batch_size == b
    assert batch.dense_features.shape == (b, ref.n_dense)
    assert batch.dense_features.dtype == torch.float32
    assert batch.dense_features.tolist() == ref.dense
    expected_labels = (b,) if ref.num_tasks is None else (b, ref.num_tasks)
    assert batch.labels.shape == expected_labels and batch.labels.dtype == torch.float32
    assert batch.labels.tolist() == ref.labels
    for t in (batch.dense_features, batch.labels, batch.sparse_features.values()):
        assert t.device.type == device_type
    assert_kjt_matches(batch.sparse_features, ref.kjt)


@SETTINGS
@given(ref=ref_batches())
def test_pickle_round_trip(backend, ref):
    assert_batch_matches(pickle.loads(pickle.dumps(batch_from_ref(ref))), ref)


@SETTINGS
@given(ref=ref_batches(), non_blocking=st.booleans())
def test_to_cpu(backend, ref, non_blocking):
    assert_batch_matches(batch_from_ref(ref).to(torch.device("cpu"), non_blocking=non_blocking), ref)
    assert_batch_matches(batch_from_ref(ref).to("cpu"), ref)


@SETTINGS
@given(ref=ref_batches())
def test_lightning_move_data_to_device(backend, ref):
    from lightning_fabric.utilities.apply_func import move_data_to_device

    moved = move_data_to_device(batch_from_ref(ref), torch.device("cpu"))
    assert_batch_matches(moved, ref)
    # inside the collections a DataLoader may yield
    nested = move_data_to_device({"batch": batch_from_ref(ref), "also": [batch_from_ref(ref)]}, "cpu")
    assert_batch_matches(nested["batch"], ref)
    assert_batch_matches(nested["also"][0], ref)


def test_lightning_module_transfer_batch_to_device(backend):
    """The hook a LightningModule's Trainer calls on every batch (the default implementation)."""
    from pytorch_lightning import LightningModule

    kjt = RefKJT(["a", "b"], [[[1], []], [[2, 3], [4]]], [[[0.5], []], [[1.0, 2.0], [3.0]]], 2)
    ref = RefBatch([[0.5], [1.5]], 1, kjt, [1.0, 0.0], None)
    moved = LightningModule().transfer_batch_to_device(batch_from_ref(ref), torch.device("cpu"), 0)
    assert_batch_matches(moved, ref)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, refs):
        self.refs = refs

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        return batch_from_ref(self.refs[i])  # built inside the worker, pickled back to the parent


def test_dataloader_worker_returns_equal_batches(backend):
    refs = [
        RefBatch([[1.0, 2.0]], 2, RefKJT(["a"], [[[7, 8]]], [[[0.5, -0.5]]], 1), [[1.0, 0.0]], 2),
        RefBatch([], 0, RefKJT(["a", "b"], [[], []], None, 0), [], None),
        RefBatch([[], []], 0, RefKJT(["a", "b"], [[[], [9]], [[], []]], None, 2, torch.int32, torch.int32),
                 [0.0, 1.0], None),
    ]
    loader = torch.utils.data.DataLoader(_Batches(refs), batch_size=None, num_workers=1)
    got = list(loader)
    assert len(got) == len(refs)
    for batch, ref in zip(got, refs, strict=True):
        assert_batch_matches(batch, ref)


@needs_cuda
@SETTINGS
@given(ref=ref_batches())
def test_pin_memory_to_cuda_and_record_stream(backend, ref):
    pinned = batch_from_ref(ref).pin_memory()
    for t in (pinned.dense_features, pinned.labels, pinned.sparse_features.values()):
        assert t.is_pinned() or t.numel() == 0
    assert_batch_matches(pinned, ref)
    on_gpu = pinned.to(torch.device("cuda"), non_blocking=True)
    on_gpu.record_stream(torch.cuda.current_stream())
    torch.cuda.synchronize()
    assert_batch_matches(on_gpu, ref, device_type="cuda")

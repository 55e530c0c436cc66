"""fbgemm on CPU: a group whose updates run as concurrent parts trains bit-for-bit like fbgemm's own backward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels import GroupSpec
from recframe.embedding.kernels.fbgemm import FbgemmEmbeddingKernel, concurrent_parts, fbgemm_import_error

from .reference import random_case

pytestmark = pytest.mark.skipif(fbgemm_import_error() is not None, reason="fbgemm_gpu does not import here")


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spec(feature_tables: list[int], optimizer: str = "adagrad", device: str = "cpu", pooled: bool = True,
         weight_dtype: str = "fp32") -> GroupSpec:
    tables = [TableConfig(name=f"t{i}", num_embeddings=10, embedding_dim=4, feature_names=[f"f{i}"],
                          weight_dtype=weight_dtype) for i in range(max(feature_tables) + 1)]
    return GroupSpec(tables=tables, feature_tables=feature_tables, optimizer=SparseOptimizer(name=optimizer),
                     pooled=pooled, device=torch.device(device))


def test_parts_are_balanced_and_never_split_a_table() -> None:
    assert concurrent_parts(spec([0, 1, 2, 3, 4, 5]), threads=2) == [range(0, 3), range(3, 6)]
    assert concurrent_parts(spec([0, 1, 2, 3, 4, 5]), threads=3) == [range(0, 2), range(2, 4), range(4, 6)]
    # Table 0 serves features 0 and 2: no cut may fall at 1 or 2.
    assert concurrent_parts(spec([0, 1, 0, 2, 3]), threads=2) == [range(0, 3), range(3, 5)]
    assert concurrent_parts(spec([0, 1, 0]), threads=2) == [range(0, 3)]
    assert concurrent_parts(spec([0, 1]), threads=8) == [range(0, 1), range(1, 2)]


@pytest.mark.parametrize("changes", [
    {"threads": 1}, {"device": "cuda"}, {"pooled": False}, {"optimizer": "rowwise_adagrad"},
], ids=["one-thread", "cuda", "sequence", "rowwise-fp32-is-parallel-in-fbgemm"])
def test_no_split_where_fbgemm_is_already_parallel_or_it_cannot_help(changes: dict) -> None:
    threads = changes.pop("threads", 4)
    assert concurrent_parts(spec([0, 1, 2, 3], **changes), threads=threads) == [range(4)]


def test_rowwise_adagrad_is_split_where_fbgemm_falls_back_to_its_serial_loop() -> None:
    assert len(concurrent_parts(spec([0, 1, 2, 0], optimizer="rowwise_adagrad"), threads=2)) == 1  # cannot cut
    assert len(concurrent_parts(spec([0, 0, 1, 2], optimizer="rowwise_adagrad"), threads=2)) == 2  # shared table
    assert len(concurrent_parts(spec([0, 1], optimizer="rowwise_adagrad", weight_dtype="fp16"), threads=2)) == 2


def train(case_seed: int, optimizer: SparseOptimizer, threads: int) -> tuple[EmbeddingBagCollection, list]:
    case = random_case(case_seed)
    with cpu_threads(threads):
        torch.manual_seed(case_seed)
        module = EmbeddingBagCollection(case.tables, optimizer, backend="fbgemm")
    generator = torch.Generator().manual_seed(case_seed)
    outputs = []
    for kjt in case.batches(5):
        out = module(kjt).values()
        outputs.append(out.detach().clone())
        out.backward(torch.randn(out.shape, generator=generator))
    return module, outputs


@pytest.mark.parametrize("seed", [0, 3, 7])  # cases whose groups can be split (7: unweighted bags)
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rowwise_adagrad"])
def test_split_groups_train_bit_for_bit_like_one_tbe(name: str, seed: int) -> None:
    optimizer = SparseOptimizer(name=name, lr=0.1)
    whole, whole_outputs = train(seed, optimizer, threads=1)
    split, split_outputs = train(seed, optimizer, threads=3)
    kernels = [k for k in split.kernels if isinstance(k, FbgemmEmbeddingKernel)]
    assert any(len(k.feature_ranges) > 1 for k in kernels), "the test must exercise a split group"
    for a, b in zip(whole_outputs, split_outputs, strict=True):
        assert torch.equal(a, b)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, split.state_dict()[key]), key
    whole_states, split_states = whole.optimizer_state_dict(), split.optimizer_state_dict()
    for table, states in whole_states.items():
        for state, value in states.items():
            assert torch.equal(value, split_states[table][state]), (table, state)


def test_an_error_in_a_concurrent_update_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FbgemmEmbeddingKernel(spec([0, 1]), threads=2)
    assert len(kernel.feature_ranges) == 2
    calls = []

    def failing_update(grad: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> None:
        calls.append(indices.tolist())
        if indices.tolist() == [2]:  # the second part, run on a worker thread
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(kernel, "update", failing_update)
    out = kernel(torch.tensor([1, 2]), torch.tensor([0, 1, 2]), None)
    with pytest.raises(RuntimeError, match="disk on fire"):
        out.backward(torch.ones(1, 8))
    assert sorted(calls) == [[1], [2]]

"""Pooled outputs in autocast's dtype (``EmbeddingBagCollection(output_dtype="auto")``).

Under autocast the ``auto`` collection returns its pooled embeddings in autocast's dtype: the
triton kernels store the fp32 sums rounded once and read the 16-bit gradient directly; the other
backends and the ``lookup_hook`` are cast after. Either way the numbers are those of the fp32
output cast to that dtype, and the table updates those of that cast's gradient (bit for bit).
Triton runs through its interpreter here (tests/conftest.py); the GPU test is
``tests/gpu/test_triton_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.collection import output_dtype_now
from recframe.embedding.kernels.triton_graphs import BackwardGraphs
from recframe.sparse import KeyedJaggedTensor

from .reference import OPTIMIZERS, random_case
from .test_triton_graphs import FakeGraph


def _triton_ok() -> bool:
    try:
        from recframe.embedding.kernels import triton_kernels
    except Exception:  # no triton: the triton cases skip
        return False
    return triton_kernels.INTERPRETED


BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not _triton_ok(), reason="triton interpreter"))]


def _pair(tables: list[TableConfig], opt: SparseOptimizer, backend: str) -> tuple[EmbeddingBagCollection, ...]:
    """An ``auto`` and an ``fp32`` collection with the same initial tables."""
    torch.manual_seed(0)
    auto = EmbeddingBagCollection(tables, opt, backend=backend, output_dtype="auto")
    torch.manual_seed(0)
    return auto, EmbeddingBagCollection(tables, opt, backend=backend)


def _assert_same_tables(a: EmbeddingBagCollection, b: EmbeddingBagCollection) -> None:
    for key, value in b.state_dict().items():
        assert torch.equal(a.state_dict()[key], value), key
    for table, states in b.optimizer_state_dict().items():
        for name, value in states.items():
            assert torch.equal(a.optimizer_state_dict()[table][name], value), (table, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_auto_output_is_the_cast_fp32_output_and_trains_the_same(backend: str, dtype: torch.dtype) -> None:
    """Seed 0: weighted bags, a shared table, several kernel groups (mixed dims): outputs equal the fp32
    output cast to autocast's dtype, and after each backward the tables and states equal those trained through
    that cast (autograd's fp32 copy of the 16-bit gradient)."""
    case = random_case(0)
    auto, fp32 = _pair(case.tables, OPTIMIZERS[2], backend)
    assert set(auto.backends.values()) == {backend} and len(auto.kernels) > 1
    generator = torch.Generator().manual_seed(1)
    for kjt in case.batches(3):
        with torch.autocast("cpu", dtype=dtype):
            out = auto(kjt).values()
            reference = fp32(kjt).values()
        assert out.dtype == dtype and reference.dtype == torch.float32
        assert torch.equal(out, reference.to(dtype))
        grad = torch.randn(out.shape, generator=generator).to(dtype)
        out.backward(grad)
        reference.to(dtype).backward(grad)
        _assert_same_tables(auto, fp32)
    assert not torch.equal(auto.state_dict()["t0.weight"], EmbeddingBagCollection(
        case.tables, OPTIMIZERS[2], backend="torch").state_dict()["t0.weight"])  # trained


def test_triton_graphed_backward_reads_the_16_bit_gradient() -> None:
    """The repeated shape's backward through its graph buffers (the gradient read through its address,
    ``INDIRECT``, as bf16) equals the eager bf16 backward and the fp32 path, bit for bit. The capture is
    replaced by running the launches again at each replay (CUDA graphs themselves: tests/gpu)."""
    if not _triton_ok():
        pytest.skip("triton interpreter")
    tables = [TableConfig(name="a", num_embeddings=40, embedding_dim=6, feature_names=["f", "g"], pooling="mean"),
              TableConfig(name="b", num_embeddings=5, embedding_dim=6, feature_names=["h"])]
    opt = OPTIMIZERS[2]  # rowwise_adagrad
    eager, fp32 = _pair(tables, opt, "triton")
    graphed, _ = _pair(tables, opt, "triton")
    for kernel in graphed.kernels:
        kernel.graphs = BackwardGraphs(enabled=True)
    original = BackwardGraphs._capture
    BackwardGraphs._capture = lambda self, launch, device: FakeGraph(launch)
    try:
        lengths = torch.tensor([2, 0, 3, 1, 1, 4, 0, 2, 5])
        generator = torch.Generator().manual_seed(3)
        for _ in range(4):
            kjt = KeyedJaggedTensor.from_lengths(["f", "g", "h"], torch.randint(0, 5, (int(lengths.sum()),),
                                                                                 generator=generator), lengths)
            grad = torch.randn(3, 18, generator=generator).bfloat16()
            for module in (eager, graphed, fp32):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = module(kjt).values()
                (out if out.dtype == torch.bfloat16 else out.bfloat16()).backward(grad)
            _assert_same_tables(graphed, eager)
            _assert_same_tables(graphed, fp32)
    finally:
        BackwardGraphs._capture = original
    (entry,) = graphed.kernels[0].graphs._entries.values()
    assert entry.grad_dtype == torch.bfloat16 and entry.graph.replays == 2  # steps 2 and 3 replayed


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_without_autocast_or_when_asked(backend: str) -> None:
    tables = [TableConfig(name="t", num_embeddings=6, embedding_dim=4, feature_names=["f"])]
    auto, fp32 = _pair(tables, OPTIMIZERS[2], backend)
    kjt = KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
    assert auto(kjt).values().dtype == torch.float32  # no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fp32(kjt).values().dtype == torch.float32  # output_dtype fp32
        assert auto(kjt).values().dtype == torch.bfloat16
        empty = KeyedJaggedTensor.from_lengths(["f"], torch.zeros(0, dtype=torch.int64), torch.zeros(0).long())
        assert auto(empty).values().dtype == torch.bfloat16  # an empty batch too
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert auto(kjt).values().dtype == torch.float32
    assert output_dtype_now("auto", torch.device("meta")) == torch.float32


def test_the_lookup_hooks_fp32_output_is_cast() -> None:
    """A ``lookup_hook`` (the data-parallel replicas) returns fp32: the collection casts it."""
    tables = [TableConfig(name="t", num_embeddings=6, embedding_dim=4, feature_names=["f", "g"])]
    auto, fp32 = _pair(tables, OPTIMIZERS[0], "torch")
    calls = []

    def hook(g: int, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        calls.append(g)
        return auto.kernels[g](indices, offsets, weights)

    auto.lookup_hook = hook
    kjt = KeyedJaggedTensor.from_lengths(["f", "g"], torch.tensor([1, 2, 3, 5]), torch.tensor([2, 1, 0, 1]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, reference = auto(kjt).values(), fp32(kjt).values()
    assert calls == [0] and out.dtype == torch.bfloat16 and torch.equal(out, reference.bfloat16())

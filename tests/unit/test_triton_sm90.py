"""Every Triton kernel specialization the CPU tests launch compiles for an H100/H200 (sm_90), without a GPU.

The interpreter tier checks what the kernels compute; it never lowers them (tests/unit/triton_sm90.py says why
that matters). This runs one small workload through each kernel family under the interpreter, recording the
launches (argument types, constexprs, ``num_warps``): the embedding backend's forward, graphed and eager
backward with every optimizer, 16-bit weights and 16-bit (autocast) outputs, sequence lookups; the cross layers'
backward in fp32 and bf16; the fused dense Adagrad; the serving lookup's quantized modes. Then it compiles
each distinct specialization to an sm_90 cubin with Triton's own compiler and ``ptxas``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from recframe.embedding import EmbeddingBagCollection, EmbeddingCollection  # noqa: E402
from recframe.embedding.kernels import triton_kernels  # noqa: E402
from recframe.embedding.kernels.triton_graphs import BackwardGraphs  # noqa: E402
from recframe.sparse import KeyedJaggedTensor  # noqa: E402

from .embedding.reference import OPTIMIZERS, random_case  # noqa: E402
from .embedding.test_triton_graphs import FakeGraph  # noqa: E402
from .triton_sm90 import LaunchSpec, compile_for_sm90, record_launches  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_kernels.INTERPRETED, reason="records launches under Triton's "
                                "interpreter (TRITON_INTERPRET=1, set by tests/conftest.py where there is no GPU)")


def _train(module: torch.nn.Module, batches: list[KeyedJaggedTensor], dtype: torch.dtype | None = None) -> None:
    """Forward and backward of each batch, under CPU autocast to ``dtype`` where given."""
    for kjt in batches:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = module(kjt)
            values = [out[f].values() for f in out] if isinstance(out, dict) else [out.values()]
        sum(v.float().square().sum() for v in values).backward()


def _embedding_workloads() -> None:
    case = random_case(0)  # weighted bags, a shared table, mixed dims
    for opt in OPTIMIZERS:
        _train(EmbeddingBagCollection(case.tables, opt, backend="triton"), case.batches(1))
    for dtype in (torch.bfloat16, torch.float16):
        _train(EmbeddingBagCollection(case.tables, OPTIMIZERS[2], backend="triton", output_dtype="auto"),
               case.batches(1), dtype)
        weights16 = [dataclasses.replace(t, weight_dtype="bf16" if dtype == torch.bfloat16 else "fp16")
                     for t in case.tables]
        _train(EmbeddingBagCollection(weights16, OPTIMIZERS[2], backend="triton"), case.batches(1))
    sequence = [dataclasses.replace(t, pooling="none") for t in case.tables]
    _train(EmbeddingCollection(sequence, OPTIMIZERS[1], backend="triton"), case.batches(1))
    original = BackwardGraphs._capture
    BackwardGraphs._capture = lambda self, launch, device: FakeGraph(launch)
    try:
        for dtype in (None, torch.bfloat16):  # the graphed backward reads its inputs through addresses
            graphed = EmbeddingBagCollection(case.tables, OPTIMIZERS[2], backend="triton", output_dtype="auto")
            for kernel in graphed.kernels:
                kernel.graphs = BackwardGraphs(enabled=True)
            batch = case.batches(1)[0]
            _train(graphed, [batch, batch, batch], dtype)
    finally:
        BackwardGraphs._capture = original


def _cross_workloads() -> None:
    from recframe.models.low_rank_cross import low_rank_cross

    for dtype in (torch.float32, torch.bfloat16):
        x0 = torch.randn(40, 70, dtype=dtype, requires_grad=True)  # ragged tiles both ways
        weights = [torch.randn(s, dtype=dtype, requires_grad=True) for s in [(8, 70)] * 2 + [(70, 8)] * 2 + [(70,)] * 2]
        low_rank_cross(x0, weights[:2], weights[2:4], weights[4:]).float().sum().backward()


def _dense_optimizer_workloads() -> None:
    from recframe.training.fused_adagrad import FusedAdagrad

    for weight_decay in (0.0, 0.01):
        params = [torch.nn.Parameter(torch.randn(s)) for s in [(3,), (70, 33)]]
        for p in params:
            p.grad = torch.randn_like(p)
        FusedAdagrad(params, lr=0.05, eps=1e-8, weight_decay=weight_decay).step()


def _serving_workloads() -> None:
    from recframe.serving import triton_lookup
    from recframe.serving.quantize import QuantizedRows

    lengths = torch.tensor([3, 0, 1, 4])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    rows = torch.randint(0, 30, (int(lengths.sum()),))
    for mode in ("none", "fp16", "int8", "int4"):
        table = QuantizedRows.from_weight(torch.randn(30, 8), mode)
        triton_lookup.pooled_rows(table, rows, torch.rand(rows.numel()), offsets)


@pytest.fixture(scope="module")
def launches() -> list[LaunchSpec]:
    specs: list[LaunchSpec] = []
    with record_launches(specs):
        _embedding_workloads()
        _cross_workloads()
        _dense_optimizer_workloads()
        _serving_workloads()
    return specs


def test_the_workloads_reach_every_kernel(launches: list[LaunchSpec]) -> None:
    """Each ``@triton.jit`` entry point is launched, with the variants that change its code."""
    kernels = {(s.module.rsplit(".", 1)[-1], s.name) for s in launches}
    assert kernels == {("triton_kernels", "pooled_forward"), ("triton_kernels", "sequence_forward"),
                       ("triton_kernels", "segment_partials"), ("triton_kernels", "update_rows"),
                       ("cross_kernel", "cross_layer_grads"), ("adagrad_kernel", "adagrad_update"),
                       ("triton_lookup", "_pooled_quantized")}
    updates = [dict(s.constexprs) for s in launches if s.name == "update_rows"]
    assert {u["OPT"] for u in updates} == {0, 1, 2, 3, 4, 5}, "every optimizer's update"
    assert {u["INDIRECT"] for u in updates} == {False, True}, "eager and graphed backward"
    assert {u["GRAD_DTYPE"] for u in updates} >= {"tl.fp32", "tl.bf16", "tl.fp16"}, "16-bit gradients"
    assert {dict(s.signature)["g"] for s in launches if s.name == "cross_layer_grads"} == {"*fp32", "*bf16"}


def test_every_specialization_compiles_for_sm90(launches: list[LaunchSpec]) -> None:
    pytest.importorskip("triton.backends.nvidia", reason="Triton's NVIDIA backend (ptxas) is not installed")
    failures = compile_for_sm90(launches)
    assert not failures, "\n".join(failures)


def test_a_kernel_the_gpu_compiler_rejects_is_reported() -> None:
    """The check can fail: a specialization that does not type-check (its column count a pointer, multiplied)."""
    bad = LaunchSpec("recframe.models.cross_kernel", "cross_layer_grads",
                     (("g", "*fp32"), ("x0", "*fp32"), ("h2", "*fp32"), ("acc", "*fp32"), ("dh2", "*fp32"),
                      ("partial", "*fp32"), ("rows", "i32"), ("cols", "*fp32"), ("HAS_ACC", "constexpr"),
                      ("BLOCK_M", "constexpr"), ("BLOCK_N", "constexpr")),
                     (("HAS_ACC", True), ("BLOCK_M", 32), ("BLOCK_N", 64)), (("num_warps", 4),))
    (failure,) = compile_for_sm90([bad])
    assert "cross_layer_grads" in failure

"""The low-rank cross layers' fused backward (``low_rank_cross``) against autograd through the plain ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own alias)

from recframe.models import low_rank_cross as module
from recframe.models.low_rank_cross import layer_grads, low_rank_cross

triton = pytest.importorskip("triton") if module.INTERPRETED else None


@pytest.fixture(params=["kernel", "torch"] if module.INTERPRETED else ["torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on both of ``layer_grads``' paths: the Triton kernel (interpreted on CPU) and torch's ops."""
    if request.param == "torch":
        monkeypatch.setattr(module, "kernel_usable", lambda t: False)
    return request.param


def plain_layers(x0: torch.Tensor, down: list, up: list, bias: list) -> torch.Tensor:
    """The layers as plain ops (autograd's backward), as ``LowRankCrossNet`` ran them before."""
    x = x0
    for v, u, b in zip(down, up, bias, strict=True):
        x = torch.addcmul(x, x0, F.linear(F.linear(x, v), u, b))
    return x


def make_inputs(batch: int, d: int, r: int, layers: int, dtype: torch.dtype) -> tuple[torch.Tensor, list, list, list]:
    torch.manual_seed(0)
    x0 = torch.randn(batch, d, dtype=dtype, requires_grad=True)
    down = [torch.randn(r, d, dtype=dtype, requires_grad=True) for _ in range(layers)]
    up = [torch.randn(d, r, dtype=dtype, requires_grad=True) for _ in range(layers)]
    bias = [torch.randn(d, dtype=dtype, requires_grad=True) for _ in range(layers)]
    return x0, down, up, bias


def test_gradcheck_in_float64(path: str) -> None:
    x0, down, up, bias = make_inputs(3, 5, 2, 2, torch.float64)
    assert torch.autograd.gradcheck(lambda x, *w: low_rank_cross(x, w[:2], w[2:4], w[4:]), (x0, *down, *up, *bias))


@pytest.mark.parametrize("layers", [1, 3])
def test_equals_autograd_through_the_plain_ops_in_float32(layers: int, path: str) -> None:
    x0, down, up, bias = make_inputs(16, 12, 4, layers, torch.float32)
    inputs = [x0, *down, *up, *bias]
    upstream = torch.randn(16, 12)
    got = low_rank_cross(x0, down, up, bias)
    want = plain_layers(x0, down, up, bias)
    assert torch.equal(got, want)  # the same forward ops
    for g, w in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(want, inputs, upstream),
                    strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_under_autocast_the_stream_is_bf16_and_weight_grads_keep_their_dtype(path: str) -> None:
    """The caller casts ``x0`` (as ``LowRankCrossNet`` does); the weights stay fp32 parameters."""
    x0, down, up, bias = make_inputs(32, 24, 8, 3, torch.float32)
    x0_bf16 = x0.detach().to(torch.bfloat16).requires_grad_()
    weights = [*down, *up, *bias]
    upstream = torch.randn(32, 24).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = low_rank_cross(x0_bf16, down, up, bias)
        want = plain_layers(x0_bf16, down, up, bias)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    got_grads = torch.autograd.grad(got, [x0_bf16, *weights], upstream)
    want_grads = torch.autograd.grad(want, [x0_bf16, *weights], upstream)
    assert got_grads[0].dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in got_grads[1:])
    for g, w in zip(got_grads, want_grads, strict=True):  # bf16 products summed in another order
        torch.testing.assert_close(g.float(), w.float(), rtol=0.03, atol=0.03 * float(w.abs().max()))


def test_only_the_gradients_asked_for(path: str) -> None:
    x0, down, up, bias = make_inputs(4, 6, 2, 2, torch.float32)
    frozen = x0.detach()
    out = low_rank_cross(frozen, down, up, bias)
    grads = torch.autograd.grad(out.sum(), [*down, *up, *bias])
    want = torch.autograd.grad(plain_layers(frozen, down, up, bias).sum(), [*down, *up, *bias])
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w)


def test_without_gradients_or_layers() -> None:
    x0, down, up, bias = make_inputs(4, 6, 2, 2, torch.float32)
    with torch.no_grad():
        out = low_rank_cross(x0, down, up, bias)
    assert out.grad_fn is None and torch.equal(out, plain_layers(x0, down, up, bias).detach())
    assert low_rank_cross(x0, [], [], []) is x0


@pytest.mark.parametrize("shape", [(1, 1), (70, 130), (128, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_grads_kernel_equals_the_torch_ops(shape: tuple[int, int], dtype: torch.dtype,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's three outputs against torch's ``mul``, ``addcmul_`` and fp32 ``sum`` (ragged blocks too): equal
    but for fused multiply-adds and the interpreter's bf16 rounding (a GPU test compares them on the device)."""
    if not module.INTERPRETED:
        pytest.skip("the kernel runs on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1)")
    torch.manual_seed(0)
    g, x0, h2, acc = (torch.randn(shape).to(dtype) for _ in range(4))
    got = [layer_grads(g, x0, h2, None), layer_grads(g, x0, h2, acc.clone())]
    monkeypatch.setattr(module, "kernel_usable", lambda t: False)
    want = [layer_grads(g, x0, h2, None), layer_grads(g, x0, h2, acc.clone())]
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}  # fma, rounding
    for got_one, want_one in zip(got, want, strict=True):
        torch.testing.assert_close(got_one[0].float(), want_one[0].float(), **tol)
        torch.testing.assert_close(got_one[1].float(), want_one[1].float(), **tol)
        assert got_one[2].dtype == torch.float32
        torch.testing.assert_close(got_one[2], got_one[0].float().sum(0), rtol=1e-5, atol=1e-4)  # its dh2's sums


@pytest.mark.skipif(not module.INTERPRETED, reason="the kernel path runs under Triton's interpreter")
def test_a_failing_kernel_falls_back_to_torch_ops_once_and_for_all(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A kernel that does not compile or launch on the GPU at hand costs speed, not the run: the backward
    gives the torch ops' gradients, warns once, and does not try the kernel again."""
    from recframe.models import cross_kernel

    calls = []

    class Broken:
        def __getitem__(self, grid: tuple[int, int]):  # noqa: ANN204 (a launcher)
            def launch(*args: object, **kwargs: object) -> None:
                calls.append(grid)
                raise RuntimeError("PassManager::run failed")
            return launch

    monkeypatch.setattr(cross_kernel, "cross_layer_grads", Broken())
    monkeypatch.setattr(module, "KERNEL_FAILURE", [])
    x0, down, up, bias = make_inputs(16, 12, 4, 3, torch.float32)
    inputs = [x0, *down, *up, *bias]
    with caplog.at_level("WARNING", logger=module.__name__):
        got = torch.autograd.grad(low_rank_cross(x0, down, up, bias).sum(), inputs)
    want = torch.autograd.grad(plain_layers(x0, down, up, bias).sum(), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1 and module.KERNEL_FAILURE == ["RuntimeError: PassManager::run failed"]
    assert [r.message for r in caplog.records if "kernel failed" in r.message]
    assert not module.kernel_usable(x0)

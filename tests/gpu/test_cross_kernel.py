"""The cross layers' backward kernel on a GPU (recframe.models.cross_kernel via low_rank_cross.layer_grads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own alias)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_layer_grads_kernel_equals_the_torch_ops_on_the_gpu(dtype: torch.dtype,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from recframe.models import low_rank_cross as module

    torch.manual_seed(0)
    g, x0, h2, acc = (torch.randn(1000, 3456, device="cuda").to(dtype) for _ in range(4))
    got = module.layer_grads(g, x0, h2, acc.clone())
    monkeypatch.setattr(module, "kernel_usable", lambda t: False)
    want = module.layer_grads(g, x0, h2, acc.clone())
    assert torch.equal(got[0], want[0])  # g * x0, rounded once
    ulp = 1e-2 if dtype == torch.bfloat16 else 1e-6  # acc + g * h2: a fused multiply-add may round once less
    torch.testing.assert_close(got[1].float(), want[1].float(), rtol=ulp, atol=ulp)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-3)


def test_cross_net_grads_under_autocast_match_autograd_on_the_gpu() -> None:
    from recframe.models.low_rank_cross import low_rank_cross

    torch.manual_seed(0)
    d, r = 3456, 512
    x0 = torch.randn(2048, d, device="cuda").to(torch.bfloat16).requires_grad_()
    down = [(torch.randn(r, d, device="cuda") / d**0.5).requires_grad_() for _ in range(3)]
    up = [(torch.randn(d, r, device="cuda") / r**0.5).requires_grad_() for _ in range(3)]
    bias = [torch.randn(d, device="cuda").requires_grad_() for _ in range(3)]
    inputs = [x0, *down, *up, *bias]
    upstream = torch.randn(2048, d, device="cuda").to(torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = low_rank_cross(x0, down, up, bias)
        x = x0
        for v, u, b in zip(down, up, bias, strict=True):
            x = torch.addcmul(x, x0, F.linear(F.linear(x, v), u, b))
    assert torch.equal(got, x)
    for ours, theirs in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(x, inputs, upstream),
                            strict=True):
        scale = float(theirs.float().abs().max())
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=0.03, atol=0.03 * scale)

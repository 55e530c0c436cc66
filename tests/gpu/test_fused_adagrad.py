"""FusedAdagrad compiled on a GPU: torch.optim.Adagrad's numbers, no host sync (recframe.training.fused_adagrad)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_steps_match_torch_adagrad_on_the_gpu(weight_decay: float) -> None:
    from recframe.training.fused_adagrad import FusedAdagrad

    torch.manual_seed(0)
    shapes = [(3,), (512, 415), (1,), (70_001,)]
    ours = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    fused = FusedAdagrad(ours, lr=0.05, eps=1e-8, weight_decay=weight_decay)
    reference = torch.optim.Adagrad(theirs, lr=0.05, eps=1e-8, weight_decay=weight_decay, foreach=True)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in ours]
        for params in (ours, theirs):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
        fused.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_steps_do_not_wait_for_the_gpu() -> None:
    from recframe.training.fused_adagrad import FusedAdagrad

    params = [torch.nn.Parameter(torch.randn(1000, device="cuda")), torch.nn.Parameter(torch.randn(7, device="cuda"))]
    start = [p.detach().clone() for p in params]
    fused = FusedAdagrad(params, lr=0.1, eps=1e-8, weight_decay=0.0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            for p in params:
                p.grad = torch.ones_like(p)  # new gradients: the launch's table is made again, without a wait
            fused.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    moved = 0.1 * (1 + 1 / 2**0.5 + 1 / 3**0.5)  # gradient 1 three times: sums 1, 2, 3
    for p, p0 in zip(params, start, strict=True):
        torch.testing.assert_close(p.detach(), p0 - moved)

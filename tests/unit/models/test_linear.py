"""``models.linear.Linear``: oneDNN for fp32 CPU matmuls, equal to ``nn.Linear`` up to the order of the sums."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recframe.models import linear as linear_module
from recframe.models.linear import Linear, onednn_applies
from recframe.models.towers import MLP

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("transposed_input", [False, True])
def test_forward_and_gradients_equal_nn_linear(bias: bool, transposed_input: bool) -> None:
    torch.manual_seed(0)
    layer = Linear(415, 64, bias=bias)
    base = torch.randn(415, 32) if transposed_input else torch.randn(32, 415)
    x = (base.t() if transposed_input else base).detach().requires_grad_(True)
    grad = torch.randn(32, 64)
    out = layer(x)
    out.backward(grad)
    mine = [x.grad.clone(), layer.weight.grad.clone()] + ([layer.bias.grad.clone()] if bias else [])
    x.grad = None
    layer.zero_grad()
    reference = F.linear(x, layer.weight, layer.bias)
    reference.backward(grad)
    theirs = [x.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_frozen_input_gets_no_gradient() -> None:
    layer = Linear(8, 4)
    x = torch.randn(3, 8)
    layer(x).sum().backward()
    assert x.grad is None and layer.weight.grad is not None


def test_only_fp32_cpu_2d_outside_autocast() -> None:
    w = torch.zeros(4, 8)
    assert onednn_applies(torch.zeros(2, 8), w)
    assert not onednn_applies(torch.zeros(2, 8, dtype=torch.float64), w.double())
    assert not onednn_applies(torch.zeros(2, 3, 8), w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_applies(torch.zeros(2, 8), w)


def test_the_mlp_runs_its_layers_on_onednn_in_fp32_and_not_under_autocast(monkeypatch) -> None:
    calls = []
    original = linear_module._OneDnnLinear.apply
    monkeypatch.setattr(linear_module._OneDnnLinear, "apply", lambda *a: calls.append(1) or original(*a))
    mlp = MLP(13, [16, 8, 1], activate_last=False)
    mlp(torch.randn(4, 13)).sum().backward()
    assert len(calls) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(torch.randn(4, 13))
    assert len(calls) == 3 and out.dtype == torch.bfloat16
    assert set(mlp.state_dict()) == {f"linears.{i}.{p}" for i in range(3) for p in ("weight", "bias")} | {
        f"layers.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}

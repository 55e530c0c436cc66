"""FusedAdagrad against torch.optim.Adagrad (recframe.training.fused_adagrad), through Triton's CPU interpreter
here (TRITON_INTERPRET=1, tests/conftest.py) and compiled in tests/gpu/test_fused_adagrad.py."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("triton", reason="FusedAdagrad's kernel needs triton (pip install -e '.[test]')")

from recframe.training import fused_adagrad  # noqa: E402
from recframe.training.fused_adagrad import FusedAdagrad  # noqa: E402

pytestmark = pytest.mark.skipif(not fused_adagrad.INTERPRETED and not torch.cuda.is_available(),
                                reason="needs a GPU or Triton's interpreter (TRITON_INTERPRET=1)")


def _pair(shapes: list[tuple[int, ...]], weight_decay: float) -> tuple[list, list, torch.optim.Optimizer,
                                                                       torch.optim.Optimizer]:
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    return (ours, theirs, FusedAdagrad(ours, lr=0.05, eps=1e-8, weight_decay=weight_decay),
            torch.optim.Adagrad(theirs, lr=0.05, eps=1e-8, weight_decay=weight_decay))


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_steps_match_torch_adagrad(weight_decay: float) -> None:
    ours, theirs, fused, reference = _pair([(3,), (70, 33), (5000,)], weight_decay)  # 5000: three blocks
    for step in range(4):
        grads = [torch.randn_like(p) for p in ours]
        if step == 2:
            grads[0] = None  # a parameter without a gradient this step is left alone, its step count too
        for params in (ours, theirs):
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.clone()  # new gradient tensors: the launch's table is made again
        fused.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(fused.state_dict()["state"].values(), reference.state_dict()["state"].values(), strict=True):
        assert a["step"] == b["step"]
        torch.testing.assert_close(a["sum"], b["sum"], rtol=1e-6, atol=1e-7)


def test_the_launch_table_is_kept_while_addresses_stay() -> None:
    ours, _, fused, _ = _pair([(10,), (4, 4)], 0.0)
    for p in ours:
        p.grad = torch.ones_like(p)
    fused.step()
    table = fused._launches[0]
    fused.step()  # same gradient tensors
    assert fused._launches[0] is table
    ours[1].grad = torch.ones_like(ours[1])
    fused.step()
    assert fused._launches[0] is not table


def test_tensors_it_cannot_take_go_to_torch_adagrad() -> None:
    torch.manual_seed(1)
    values = [torch.randn(6), torch.randn(6, dtype=torch.float64), torch.randn(6, 4)]
    grads = [torch.randn(6), torch.randn(6, dtype=torch.float64), torch.randn(4, 6).t()]  # the last one strided
    params, copies = ([torch.nn.Parameter(v.clone()) for v in values] for _ in range(2))
    fused, reference = FusedAdagrad(params, lr=0.1, eps=1e-8, weight_decay=0.0), torch.optim.Adagrad(copies, lr=0.1)
    for group in (params, copies):
        for p, g in zip(group, grads, strict=True):
            p.grad = g.clone() if g.is_contiguous() else g.t().clone().t()
    fused.step()
    reference.step()
    assert len(fused._launches[0].key) == 3  # the fp32 contiguous one only
    for a, b in zip(params, copies, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_checkpoints_move_between_it_and_torch_adagrad() -> None:
    ours, theirs, fused, reference = _pair([(8,), (3, 5)], 0.0)
    for p in ours:
        p.grad = torch.randn_like(p)
    fused.step()
    reference.load_state_dict(copy.deepcopy(fused.state_dict()))  # (loading shares tensors of one device)
    for p, q in zip(ours, theirs, strict=True):
        q.data.copy_(p.data)
        q.grad = torch.ones_like(q)
        p.grad = torch.ones_like(p)
    fused.step()
    reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lr_decay_is_refused() -> None:
    (param,), _, fused, _ = _pair([(4,)], 0.0)
    fused.param_groups[0]["lr_decay"] = 0.1
    param.grad = torch.ones(4)
    with pytest.raises(ValueError, match="lr_decay"):
        fused.step()


def test_a_kernel_that_fails_leaves_the_update_to_torch_adagrad(caplog: pytest.LogCaptureFixture) -> None:
    ours, theirs, fused, reference = _pair([(6,), (2, 3)], 0.0)

    class Broken:
        def __getitem__(self, grid: object) -> object:
            def launch(*args: object, **kwargs: object) -> None:
                raise RuntimeError("PTX: no such instruction")
            return launch

    fused._kernel = type("Kernel", (), {"adagrad_update": Broken(), "BLOCK": 1024})()
    for _ in range(2):
        for params in (ours, theirs):
            for p in params:
                p.grad = torch.ones_like(p)
        with caplog.at_level("WARNING"):
            fused.step()
        reference.step()
    assert [r.getMessage() for r in caplog.records].count(
        "FusedAdagrad's kernel failed (RuntimeError: PTX: no such instruction); the dense Adagrad runs torch's "
        "foreach kernels") == 1
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    assert fused.state_dict()["state"][0]["step"] == 2

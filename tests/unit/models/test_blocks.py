"""Building blocks: shapes and dtypes (batch size 1 included) and equality with plain formulas."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from recframe.models import MLP, CrossNet, DotInteraction, FMInteraction, LowRankCrossNet, WideLinear


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_mlp_shapes(batch: int, norm: str) -> None:
    mlp = MLP(7, [16, 8, 3], norm=norm, dropout=0.2)
    if norm == "batch" and batch == 1:
        mlp.eval()  # batch norm cannot train on one sample (torch's rule); it can predict one
    out = mlp(torch.randn(batch, 7))
    assert out.shape == (batch, 3) and out.dtype == torch.float32
    assert mlp.out_features == 3 and len(mlp.linears) == 3
    assert sum(isinstance(m, nn.Dropout) for m in mlp.modules()) == 3
    expected_norm = {"none": 0, "layer": 3, "batch": 3}[norm]
    assert sum(isinstance(m, nn.LayerNorm | nn.BatchNorm1d) for m in mlp.modules()) == expected_norm


def test_mlp_equals_its_layers_and_activate_last() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    mlp = MLP(4, [5, 3], activation="tanh", activate_last=False)
    a, b = mlp.linears
    assert torch.allclose(mlp(x), b(torch.tanh(a(x))))
    relu_last = MLP(4, [5, 3])
    assert bool((relu_last(x) >= 0).all())
    logits = MLP(4, [5, 3], activate_last=False)(torch.randn(200, 4))
    assert bool((logits < 0).any())  # no ReLU after the last layer


def test_mlp_dtype_follows_the_module() -> None:
    mlp = MLP(3, [4, 2], norm="layer").double()
    assert mlp(torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64


def test_mlp_dropout_only_in_training() -> None:
    mlp = MLP(4, [64, 64], dropout=0.5)
    x = torch.randn(3, 4)
    mlp.eval()
    assert torch.equal(mlp(x), mlp(x))
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))


def test_mlp_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        MLP(3, [])
    with pytest.raises(ValueError, match="activation"):
        MLP(3, [2], activation="swish")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalization"):
        MLP(3, [2], norm="group")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        MLP(3, [2], dropout=1.0)


def test_wide_linear_is_dense_product_plus_bias_plus_sparse_sum() -> None:
    torch.manual_seed(0)
    wide = WideLinear(num_dense_features=3, num_sparse_features=4, out_features=2)
    nn.init.normal_(wide.bias)
    dense, sparse = torch.randn(5, 3), torch.randn(5, 4, 2)
    expected = dense @ wide.dense.weight.T + wide.bias + sparse.sum(1)
    assert torch.allclose(wide(dense, sparse), expected, atol=1e-6)
    assert torch.allclose(wide(dense, sparse.flatten(1)), expected, atol=1e-6)
    only_sparse = WideLinear(0, 2, 1)
    assert torch.equal(only_sparse(torch.zeros(1, 0), torch.ones(1, 2, 1)), torch.full((1, 1), 2.0))
    only_dense = WideLinear(3, 0, 1)
    assert only_dense(torch.randn(1, 3), torch.zeros(1, 0)).shape == (1, 1)


@pytest.mark.parametrize("self_interaction", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_dot_interaction_equals_explicit_pairs(self_interaction: bool, batch: int) -> None:
    torch.manual_seed(0)
    f, d = 4, 6
    dense, sparse = torch.randn(batch, d), torch.randn(batch, f, d)
    block = DotInteraction(f, self_interaction=self_interaction)
    out = block(dense, sparse)
    vectors = [dense] + [sparse[:, i] for i in range(f)]
    pairs = [(i, j) for i in range(f + 1) for j in range(i + (1 if self_interaction else 0))]
    expected = torch.stack([(vectors[i] * vectors[j]).sum(1) for i, j in pairs], dim=1)
    assert out.shape == (batch, d + len(pairs)) == (batch, block.output_dim(d))
    assert torch.allclose(out[:, :d], dense)
    assert torch.allclose(out[:, d:], expected, atol=1e-5)
    no_skip = DotInteraction(f, self_interaction=self_interaction, skip_dense=False)
    assert torch.allclose(no_skip(dense, sparse), expected, atol=1e-5)


@pytest.mark.parametrize("self_interaction", [False, True])
def test_dot_interaction_gradients_equal_those_of_explicit_pairs(self_interaction: bool) -> None:
    """PairDots' one-bmm backward against autograd through the plain per-pair dot products (float64)."""
    torch.manual_seed(0)
    f, d = 4, 5
    dense = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    sparse = torch.randn(3, f, d, dtype=torch.float64, requires_grad=True)
    block = DotInteraction(f, self_interaction=self_interaction).double()
    weights = torch.randn(3, block.output_dim(d), dtype=torch.float64)
    got = torch.autograd.grad((block(dense, sparse) * weights).sum(), (dense, sparse))
    vectors = [dense] + [sparse[:, i] for i in range(f)]
    pairs = [(i, j) for i in range(f + 1) for j in range(i + (1 if self_interaction else 0))]
    plain = torch.cat([dense, torch.stack([(vectors[i] * vectors[j]).sum(1) for i, j in pairs], dim=1)], dim=1)
    expected = torch.autograd.grad((plain * weights).sum(), (dense, sparse))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_dot_interaction_under_autocast_follows_plain_autograd() -> None:
    """bf16 autocast (as trainer.precision=bf16-mixed): PairDots' gradients have the input's dtype and match the
    plain ops' autograd under the same autocast."""
    torch.manual_seed(0)
    block = DotInteraction(3)
    dense, sparse = torch.randn(4, 8, requires_grad=True), torch.randn(4, 3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(dense, sparse)
        combined = torch.cat([dense.unsqueeze(1), sparse], dim=1)
        plain = torch.bmm(combined, combined.transpose(1, 2)).flatten(1).index_select(1, block._pair_index)
    got = torch.autograd.grad(out[:, 8:].float().sum(), (dense, sparse))
    expected = torch.autograd.grad(plain.float().sum(), (dense, sparse))
    assert plain.dtype == torch.bfloat16 and got[0].dtype == got[1].dtype == torch.float32
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2)


def test_dot_interaction_edge_cases() -> None:
    assert DotInteraction(26).output_dim(64) == 64 + 27 * 26 // 2
    assert DotInteraction(0)(torch.ones(2, 3), torch.ones(2, 0, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="expected sparse of shape"):
        DotInteraction(2)(torch.ones(2, 3), torch.ones(2, 3, 3))


def test_cross_net_v1_formula() -> None:
    torch.manual_seed(0)
    block = CrossNet(in_features=5, num_layers=2)
    for b in block.biases:
        nn.init.normal_(b)
    x0 = torch.randn(4, 5)
    x = x0
    for w, b in zip(block.weights, block.biases, strict=True):
        x = torch.stack([x0[n] * torch.dot(x[n], w) + b + x[n] for n in range(4)])
    assert torch.allclose(block(x0), x, atol=1e-5)
    assert block(torch.randn(1, 5)).shape == (1, 5)
    assert torch.equal(CrossNet(5, 0)(x0), x0)
    assert sum(p.numel() for p in block.parameters()) == 2 * (5 + 5)


def test_low_rank_cross_net_is_dcnv2_with_factored_weight() -> None:
    torch.manual_seed(0)
    d, r = 6, 3
    block = LowRankCrossNet(in_features=d, num_layers=3, low_rank=r)
    for up in block.up:
        nn.init.normal_(up.bias)
    x0 = torch.randn(4, d)
    x = x0
    for down, up in zip(block.down, block.up, strict=True):
        w = up.weight @ down.weight  # the full-rank DCNv2 weight W = U V, rank <= r
        assert torch.linalg.matrix_rank(w) <= r
        x = x0 * (x @ w.T + up.bias) + x
    assert torch.allclose(block(x0), x, atol=1e-5)
    assert block(torch.randn(1, d)).shape == (1, d)
    assert torch.equal(LowRankCrossNet(d, 0, r)(x0), x0)
    assert sum(p.numel() for p in block.parameters()) == 3 * (d * r + r * d + d)


def test_low_rank_cross_net_runs_its_stream_in_autocast_s_dtype() -> None:
    """Under autocast the layers' elementwise stream is bf16 (the up products are), close to the fp32 result; the
    input's gradient comes back in the input's dtype."""
    torch.manual_seed(0)
    block = LowRankCrossNet(in_features=16, num_layers=3, low_rank=4)
    x0 = torch.randn(8, 16, requires_grad=True)
    want = block(x0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = block(x0)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)
    got.float().sum().backward()
    assert x0.grad is not None and x0.grad.dtype == torch.float32


@pytest.mark.parametrize("batch", [1, 4])
def test_fm_interaction_equals_sum_over_pairs(batch: int) -> None:
    torch.manual_seed(0)
    fields = torch.randn(batch, 5, 3, dtype=torch.float64)
    expected_vec = sum(fields[:, i] * fields[:, j] for i, j in itertools.combinations(range(5), 2))
    assert torch.allclose(FMInteraction(reduce=False)(fields), expected_vec)
    out = FMInteraction()(fields)
    assert out.shape == (batch, 1) and out.dtype == torch.float64
    assert torch.allclose(out[:, 0], expected_vec.sum(1))
    assert torch.equal(FMInteraction()(torch.randn(2, 1, 3)), torch.zeros(2, 1))  # one field: no pairs


def test_blocks_pass_gradients() -> None:
    x = torch.randn(3, 8, requires_grad=True)
    for block in (LowRankCrossNet(8, 2, 2), CrossNet(8, 2), MLP(8, [4])):
        x.grad = None
        block(x).sum().backward()
        assert x.grad is not None and bool(x.grad.abs().sum() > 0)
        assert all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocks_keep_the_dtype(dtype: torch.dtype) -> None:
    x, fields = torch.randn(2, 6, dtype=dtype), torch.randn(2, 3, 6, dtype=dtype)
    assert MLP(6, [4, 2], norm="batch").to(dtype)(x).dtype == dtype
    assert WideLinear(6, 3, 1).to(dtype)(x, fields[:, :, :1]).dtype == dtype
    assert DotInteraction(3).to(dtype)(x, fields).dtype == dtype
    assert CrossNet(6, 2).to(dtype)(x).dtype == dtype
    assert LowRankCrossNet(6, 2, 3).to(dtype)(x).dtype == dtype
    assert FMInteraction()(fields).dtype == dtype

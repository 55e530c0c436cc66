"""fbgemm backend == torch backend == plain-PyTorch reference: forward, fused backward, 5 steps, states."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, EmbeddingCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels.fbgemm import fbgemm_import_error, unsupported
from recframe.embedding.kernels.torch import sum_rows

from .reference import OPTIMIZERS, Reference, random_case

TOL = {"atol": 1e-5, "rtol": 1e-5}
HAS_FBGEMM = fbgemm_import_error() is None


def backends_for(opt: SparseOptimizer) -> list[str]:
    """Every backend that runs this optimizer on this CPU (fbgemm: per its documented support)."""
    table = TableConfig(name="t", num_embeddings=4, embedding_dim=4, feature_names=["f"])
    return ["torch"] + (["fbgemm"] if unsupported(table, opt, torch.device("cpu")) is None else [])


def opt_id(opt: SparseOptimizer) -> str:
    return f"{opt.name}-wd{opt.weight_decay}-{opt.weight_decay_mode}"


def run_pooled(opt: SparseOptimizer, seed: int, reference_opt: SparseOptimizer | None = None) -> None:
    """Train every backend and the reference on the same 5 random batches, comparing as they go."""
    case = random_case(seed)
    modules = {}
    for backend in backends_for(opt):
        torch.manual_seed(seed)
        modules[backend] = EmbeddingBagCollection(case.tables, opt, backend=backend)
    first = next(iter(modules.values()))
    for module in modules.values():  # same seed, same table order: every backend starts from the same weights
        for key, value in module.state_dict().items():
            assert torch.equal(value, first.state_dict()[key])
    ref = Reference(case.tables, reference_opt or opt, {t.name: first.state_dict()[f"{t.name}.weight"]
                                                        for t in case.tables})
    generator = torch.Generator().manual_seed(seed)
    for kjt in case.batches(5):
        expected = ref.pooled(kjt)
        grad = torch.randn(expected.shape, generator=generator)
        (expected * grad).sum().backward()
        ref.update()
        for module in modules.values():
            out = module(kjt)
            assert out.keys() == [f for t in case.tables for f in t.feature_names]
            torch.testing.assert_close(out.values(), expected, **TOL)
            (out.values() * grad).sum().backward()  # the update happens here, nothing else is called
        for module in modules.values():
            for t in case.tables:
                torch.testing.assert_close(module.state_dict()[f"{t.name}.weight"], ref.w[t.name].detach(), **TOL)
    for module in modules.values():
        states = module.optimizer_state_dict()
        for t in case.tables:
            for name, value in ref.state[t.name].items():
                torch.testing.assert_close(states[t.name][name], value, **TOL)
            if "step" in states[t.name]:
                assert int(states[t.name]["step"]) == 5


@pytest.mark.parametrize("seed", [0, 1, 5])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=opt_id)
def test_pooled_backends_match_reference(opt: SparseOptimizer, seed: int) -> None:
    run_pooled(opt, seed)


@pytest.mark.parametrize("opt", [OPTIMIZERS[2], OPTIMIZERS[5]], ids=opt_id)
def test_comparison_detects_a_wrong_update(opt: SparseOptimizer) -> None:
    """The tolerance is tight: a reference with a 0.1% different learning rate must not match."""
    with pytest.raises(AssertionError):
        run_pooled(opt, seed=0, reference_opt=dataclasses.replace(opt, lr=opt.lr * 1.001))


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("opt", [OPTIMIZERS[1], OPTIMIZERS[3], OPTIMIZERS[6]], ids=opt_id)
def test_sequence_backends_match_reference(opt: SparseOptimizer, seed: int) -> None:
    case = random_case(seed, sequence=True)
    modules = {}
    for backend in backends_for(opt):
        torch.manual_seed(seed)
        modules[backend] = EmbeddingCollection(case.tables, opt, backend=backend)
    first = next(iter(modules.values()))
    ref = Reference(case.tables, opt, {t.name: first.state_dict()[f"{t.name}.weight"] for t in case.tables})
    generator = torch.Generator().manual_seed(seed)
    for kjt in case.batches(5):
        expected = ref.sequence(kjt)
        grads = {f: torch.randn(v.shape, generator=generator) for f, v in expected.items()}
        sum((expected[f] * grads[f]).sum() for f in expected).backward()
        ref.update()
        for module in modules.values():
            out = module(kjt)
            assert list(out) == list(expected)
            for feature, jt in out.items():
                torch.testing.assert_close(jt.values(), expected[feature], **TOL)
                assert torch.equal(jt.lengths(), kjt[feature].lengths())
            sum((out[f].values() * grads[f]).sum() for f in out).backward()
    for module in modules.values():
        for t in case.tables:
            torch.testing.assert_close(module.state_dict()[f"{t.name}.weight"], ref.w[t.name].detach(), **TOL)
            for name, value in ref.state[t.name].items():
                torch.testing.assert_close(module.optimizer_state_dict()[t.name][name], value, **TOL)


@pytest.mark.skipif(not HAS_FBGEMM, reason="fbgemm_gpu does not import here")
def test_auto_mixes_backends_per_table_and_matches_torch() -> None:
    """On CPU, auto puts rowwise_adagrad tables on fbgemm and adam tables on torch, same math as torch."""
    case = random_case(5)
    adam = SparseOptimizer(name="adam", lr=0.05)
    tables = [dataclasses.replace(t, optimizer=adam if i % 2 else None) for i, t in enumerate(case.tables)]
    opt = SparseOptimizer(name="rowwise_adagrad", lr=0.1)
    torch.manual_seed(0)
    auto = EmbeddingBagCollection(tables, opt, backend="auto")
    torch.manual_seed(0)
    plain = EmbeddingBagCollection(tables, opt, backend="torch")
    assert auto.backends == {t.name: "fbgemm" if t.optimizer is None else "torch" for t in tables}
    for kjt in dataclasses.replace(case, tables=tables).batches(3):
        a, b = auto(kjt), plain(kjt)
        torch.testing.assert_close(a.values(), b.values(), **TOL)
        a.values().square().sum().backward()
        b.values().square().sum().backward()
    for key, value in auto.state_dict().items():
        torch.testing.assert_close(value, plain.state_dict()[key], **TOL)


@pytest.mark.parametrize("max_count", [1, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_row_sums_by_sparse_matmul_equal_index_add(weighted: bool, max_count: int) -> None:
    """Both ways of summing lookups into slots (CSR product on CUDA, gather + index_add_ on CPU) equal a
    Python sum; the slots past the last touched row are zero."""
    generator = torch.Generator().manual_seed(0)
    counts = torch.randint(1, max_count + 1, (50,), generator=generator)
    source = torch.randint(0, 30, (int(counts.sum()),), generator=generator)
    grad_source = torch.randn(30, 8, generator=generator)
    scale = torch.rand(source.numel(), generator=generator) if weighted else None
    expected = torch.stack([
        sum((1.0 if scale is None else float(scale[i])) * grad_source[source[i]] for i in range(lo, hi))
        for lo, hi in zip((counts.cumsum(0) - counts).tolist(), counts.cumsum(0).tolist(), strict=True)
    ])
    slot = torch.arange(counts.numel()).repeat_interleave(counts)
    for sparse_matmul in (False, True):
        out = sum_rows(grad_source, source, scale, slot, sparse_matmul=sparse_matmul)
        assert out.shape == (source.numel(), 8)
        torch.testing.assert_close(out[:counts.numel()], expected, **TOL)
        assert not out[counts.numel():].any()

"""Weights and optimizer state round-trip through state_dict / optimizer_state_dict, across backends."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels.fbgemm import fbgemm_import_error

from .reference import random_case

HAS_FBGEMM = fbgemm_import_error() is None
needs_fbgemm = pytest.mark.skipif(not HAS_FBGEMM, reason="fbgemm_gpu does not import here")
CASE = random_case(7)
BATCHES = CASE.batches(8)


def build(backend: str, opt: SparseOptimizer, seed: int) -> EmbeddingBagCollection:
    torch.manual_seed(seed)
    return EmbeddingBagCollection(CASE.tables, opt, backend=backend)


def train(module: EmbeddingBagCollection, first: int, last: int) -> None:
    """Steps ``first..last-1`` of one fixed trajectory (the same batches and loss weights for everyone)."""
    for index in range(first, last):
        out = module(BATCHES[index]).values()
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(100 + index))
        (out * weights).sum().backward()


def snapshot(module: EmbeddingBagCollection) -> tuple[dict, dict]:
    """Copies of both state dicts (they are views of the live tensors)."""
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    states = {t: {k: v.clone() for k, v in s.items()} for t, s in module.optimizer_state_dict().items()}
    return weights, states


def assert_same_trajectory(a: EmbeddingBagCollection, b: EmbeddingBagCollection, bitwise: bool) -> None:
    (wa, sa), (wb, sb) = snapshot(a), snapshot(b)
    assert wa.keys() == wb.keys() and sa.keys() == sb.keys()
    pairs = [(wa[k], wb[k]) for k in wa] + [(sa[t][k], sb[t][k]) for t in sa for k in sa[t]]
    for x, y in pairs:
        if bitwise:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)


ROUND_TRIPS = [
    ("torch", "torch", SparseOptimizer(name="rowwise_adagrad", lr=0.1), True),
    ("torch", "torch", SparseOptimizer(name="adam", lr=0.05, weight_decay=0.01), True),
    ("torch", "torch", SparseOptimizer(name="lamb", lr=0.05), True),
    ("torch", "torch", SparseOptimizer(name="rowwise_adam", lr=0.05), True),
    pytest.param("fbgemm", "fbgemm", SparseOptimizer(name="rowwise_adagrad", lr=0.1), True, marks=needs_fbgemm),
    pytest.param("fbgemm", "fbgemm", SparseOptimizer(name="adagrad", lr=0.1), True, marks=needs_fbgemm),
    # Across backends the kernels sum duplicate ids and row means in different orders: 1e-6, not bitwise.
    pytest.param("fbgemm", "torch", SparseOptimizer(name="rowwise_adagrad", lr=0.1), False, marks=needs_fbgemm),
    pytest.param("torch", "fbgemm", SparseOptimizer(name="adagrad", lr=0.1), False, marks=needs_fbgemm),
]


@pytest.mark.parametrize("source,target,opt,bitwise", ROUND_TRIPS)
def test_round_trip_continues_the_same_trajectory(source: str, target: str, opt: SparseOptimizer,
                                                  bitwise: bool) -> None:
    original = build(source, opt, seed=0)
    train(original, 0, 3)
    weights, states = snapshot(original)
    restored = build(target, opt, seed=1)  # other initial weights: everything must come from the load
    restored.load_state_dict(weights)
    restored.load_optimizer_state_dict(states)
    assert_same_trajectory(original, restored, bitwise=True)  # loading itself is exact
    train(original, 3, 6)
    train(restored, 3, 6)
    assert_same_trajectory(original, restored, bitwise=bitwise)


@needs_fbgemm
def test_fbgemm_to_torch_and_back() -> None:
    opt = SparseOptimizer(name="rowwise_adagrad", lr=0.1)
    fbgemm_run = build("fbgemm", opt, seed=0)
    train(fbgemm_run, 0, 2)
    hop = build("torch", opt, seed=1)
    hop.load_state_dict(snapshot(fbgemm_run)[0])
    hop.load_optimizer_state_dict(snapshot(fbgemm_run)[1])
    train(hop, 2, 4)
    back = build("fbgemm", opt, seed=2)
    back.load_state_dict(snapshot(hop)[0])
    back.load_optimizer_state_dict(snapshot(hop)[1])
    train(back, 4, 6)
    train(fbgemm_run, 2, 6)
    assert_same_trajectory(fbgemm_run, back, bitwise=False)


def test_state_dict_layout_is_per_table_and_backend_independent() -> None:
    opts = [SparseOptimizer(name="rowwise_adagrad"), SparseOptimizer(name="adam")]
    for opt in opts:
        layouts = []
        for backend in ["torch"] + (["fbgemm"] if HAS_FBGEMM and opt.name == "rowwise_adagrad" else []):
            module = build(backend, opt, seed=0)
            weights = module.state_dict()
            assert sorted(weights) == sorted(f"{t.name}.weight" for t in CASE.tables)
            for t in CASE.tables:
                assert weights[f"{t.name}.weight"].shape == (t.num_embeddings, t.embedding_dim)
            assert list(module.parameters()) == []  # nothing for a dense optimizer
            layouts.append({t: {k: tuple(v.shape) for k, v in s.items()}
                            for t, s in module.optimizer_state_dict().items()})
        assert all(layout == layouts[0] for layout in layouts)
        first = CASE.tables[0]
        expected = {"rowwise_adagrad": {"momentum1": (first.num_embeddings,)},
                    "adam": {"momentum1": (first.num_embeddings, first.embedding_dim),
                             "momentum2": (first.num_embeddings, first.embedding_dim), "step": ()}}[opt.name]
        assert layouts[0][first.name] == expected


def test_load_state_dict_reports_missing_unexpected_and_wrong_shapes() -> None:
    module = build("torch", SparseOptimizer(name="sgd"), seed=0)
    weights = snapshot(module)[0]
    name = CASE.tables[0].name
    missing = {k: v for k, v in weights.items() if k != f"{name}.weight"}
    with pytest.raises(RuntimeError, match=f"Missing key.*{name}.weight"):
        module.load_state_dict(missing)
    with pytest.raises(RuntimeError, match="Unexpected key.*nope.weight"):
        module.load_state_dict({**weights, "nope.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=f"size mismatch for {name}.weight"):
        module.load_state_dict({**weights, f"{name}.weight": torch.zeros(1, 1)})


def test_nested_module_and_torch_save_with_weights_only() -> None:
    model = nn.Module()
    model.ebc = build("torch", SparseOptimizer(name="adagrad"), seed=0)
    weights = model.state_dict()
    assert sorted(weights) == sorted(f"ebc.{t.name}.weight" for t in CASE.tables)
    buffer = io.BytesIO()
    torch.save({"weights": weights, "optimizer": model.ebc.optimizer_state_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    other = nn.Module()
    other.ebc = build("torch", SparseOptimizer(name="adagrad"), seed=1)
    other.load_state_dict(loaded["weights"])
    other.ebc.load_optimizer_state_dict(loaded["optimizer"])
    for key, value in weights.items():
        assert torch.equal(other.state_dict()[key], value)


def test_load_optimizer_state_dict_reports_every_problem() -> None:
    adam = build("torch", SparseOptimizer(name="adam"), seed=0)
    adagrad_state = build("torch", SparseOptimizer(name="rowwise_adagrad"), seed=0).optimizer_state_dict()
    with pytest.raises(ValueError) as err:
        adam.load_optimizer_state_dict({**adagrad_state, "extra": {}})
    message = str(err.value)
    assert "unexpected tables ['extra']" in message
    assert all(f"table {t.name!r} (adam) needs states ['momentum1', 'momentum2', 'step']" in message
               for t in CASE.tables)


def test_a_group_shares_one_step() -> None:
    tables = [TableConfig(name=n, num_embeddings=5, embedding_dim=4, feature_names=[n + "_f"]) for n in "ab"]
    module = EmbeddingBagCollection(tables, SparseOptimizer(name="adam"), backend="torch")
    state = {k: {n: v.clone() for n, v in s.items()} for k, s in module.optimizer_state_dict().items()}
    state["b"]["step"] = torch.tensor(3)
    with pytest.raises(ValueError, match="share a kernel but have different steps"):
        module.load_optimizer_state_dict(state)

"""triton backend == torch backend, on CPU through Triton's interpreter (``TRITON_INTERPRET=1``).

Forward, the fused backward + optimizer, optimizer state and step, over 5 random steps with
empty bags, duplicate ids within and across bags, shared tables, mixed dims, sum/mean pooling,
weighted bags and sequence lookups. The interpreter runs every program in Python: shapes are tiny.
The same comparisons run compiled on a GPU in ``tests/gpu/test_triton_gpu.py``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from recframe.embedding import EmbeddingBagCollection, EmbeddingCollection, SparseOptimizer, TableConfig  # noqa: E402
from recframe.embedding.kernels import triton as triton_backend  # noqa: E402
from recframe.embedding.kernels.triton_graphs import BackwardGraphs  # noqa: E402
from recframe.sparse import KeyedJaggedTensor  # noqa: E402

from .reference import OPTIMIZERS, random_case  # noqa: E402
from .test_triton_graphs import FakeGraph  # noqa: E402

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _interpreted() -> bool:
    from recframe.embedding.kernels import triton_kernels

    return triton_kernels.INTERPRETED


# tests/conftest.py sets TRITON_INTERPRET=1 before triton is first imported, where there is no GPU.
pytestmark = pytest.mark.skipif(not _interpreted(), reason="the triton kernels are compiled for a GPU in this "
                                "process; their GPU tests are tests/gpu/test_triton_gpu.py")


def opt_id(opt: SparseOptimizer) -> str:
    return f"{opt.name}-wd{opt.weight_decay}-{opt.weight_decay_mode}"


def assert_same_training(tables: list[TableConfig], opt: SparseOptimizer, batches: list[KeyedJaggedTensor],
                         sequence: bool = False, torch_opt: SparseOptimizer | None = None,
                         tol: dict[str, float] = TOL) -> None:
    """Train a triton and a torch collection side by side; outputs, weights and states must agree every step."""
    cls = EmbeddingCollection if sequence else EmbeddingBagCollection
    torch.manual_seed(0)
    fused = cls(tables, opt, backend="triton")
    torch.manual_seed(0)
    plain = cls(tables, torch_opt or opt, backend="torch")
    assert set(fused.backends.values()) == {"triton"}
    generator = torch.Generator().manual_seed(1)
    for kjt in batches:
        a, b = fused(kjt), plain(kjt)
        if sequence:
            outs = [(a[f].values(), b[f].values()) for f in b]
        else:
            assert a.keys() == b.keys()
            outs = [(a.values(), b.values())]
        loss_a, loss_b = 0.0, 0.0
        for out_a, out_b in outs:
            torch.testing.assert_close(out_a, out_b, **tol)
            grad = torch.randn(out_b.shape, generator=generator)
            loss_a, loss_b = loss_a + (out_a * grad).sum(), loss_b + (out_b * grad).sum()
        loss_a.backward()
        loss_b.backward()
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(fused.state_dict()[key].float(), value.float(), **tol)
    states_a, states_b = fused.optimizer_state_dict(), plain.optimizer_state_dict()
    for table in tables:
        assert set(states_a[table.name]) == set(states_b[table.name])
        for name, value in states_b[table.name].items():
            torch.testing.assert_close(states_a[table.name][name], value, **tol)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=opt_id)
def test_pooled_triton_matches_torch(opt: SparseOptimizer) -> None:
    seed = OPTIMIZERS.index(opt) % 3  # seeds 0, 1, 2: weighted and unweighted, sum and mean, shared tables
    case = random_case(seed)
    assert_same_training(case.tables, opt, case.batches(5))


@pytest.mark.parametrize("opt", [OPTIMIZERS[1], OPTIMIZERS[3], OPTIMIZERS[6]], ids=opt_id)
def test_sequence_triton_matches_torch(opt: SparseOptimizer) -> None:
    case = random_case(3, sequence=True)
    assert_same_training(case.tables, opt, case.batches(5), sequence=True)


def test_comparison_detects_a_wrong_update() -> None:
    """The tolerance is tight: a torch run with a 0.1% larger learning rate must not match."""
    opt = OPTIMIZERS[2]
    case = random_case(0)
    with pytest.raises(AssertionError):
        assert_same_training(case.tables, opt, case.batches(5), torch_opt=dataclasses.replace(opt, lr=opt.lr * 1.001))


def hot_rows_batches(count: int, batch: int, ids_per_bag: int, rows: int, seed: int) -> list[KeyedJaggedTensor]:
    """Bags of many ids over a few rows: segments of hundreds of lookups that span many sorted blocks."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        lengths = torch.randint(0, 2 * ids_per_bag, (2 * batch,), generator=generator)
        values = torch.randint(0, rows, (int(lengths.sum()),), generator=generator)
        weights = torch.rand(values.numel(), generator=generator) + 0.5
        out.append(KeyedJaggedTensor.from_lengths(["a", "b"], values, lengths, weights=weights))
    return out


@pytest.mark.parametrize("opt", [OPTIMIZERS[2], OPTIMIZERS[5]], ids=opt_id)
def test_long_segments_are_summed_across_blocks(opt: SparseOptimizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows looked up far more often than a block holds: partial sums of many blocks, several loop rounds."""
    monkeypatch.setattr(triton_backend, "BLOCK_LOOKUPS", 4)
    monkeypatch.setattr(triton_backend, "PARTIALS", 2)
    monkeypatch.setattr(triton_backend, "BLOCK_BAGS", 4)
    tables = [TableConfig(name="hot", num_embeddings=3, embedding_dim=5, feature_names=["a", "b"], pooling="mean")]
    assert_same_training(tables, opt, hot_rows_batches(3, batch=6, ids_per_bag=6, rows=3, seed=0))


def test_long_segments_with_default_blocks() -> None:
    tables = [TableConfig(name="hot", num_embeddings=2, embedding_dim=8, feature_names=["a", "b"])]
    assert_same_training(tables, OPTIMIZERS[1], hot_rows_batches(2, batch=24, ids_per_bag=10, rows=2, seed=1))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_weights_match_torch(dtype: str) -> None:
    """fp16/bf16 storage: both backends compute the same fp32 update and round it to nearest even.

    They differ only where fp32 rounding (~1e-7 relative) puts a value on the other side of a rounding
    boundary: then by one unit in the last place of the storage dtype (2^-8 relative for bf16, 2^-11
    for fp16), and that difference is carried into later steps. Tolerance: 2 such units, relative.
    """
    case = random_case(0)
    tables = [dataclasses.replace(t, weight_dtype=dtype) for t in case.tables]
    ulp = {"bf16": 2.0**-8, "fp16": 2.0**-11}[dtype]
    assert_same_training(tables, OPTIMIZERS[2], case.batches(5), tol={"atol": 2 * ulp * 0.5, "rtol": 2 * ulp})


def test_empty_batch_and_no_grad() -> None:
    tables = [TableConfig(name="t", num_embeddings=6, embedding_dim=4, feature_names=["f"])]
    ebc = EmbeddingBagCollection(tables, OPTIMIZERS[5], backend="triton")
    before = ebc.state_dict()["t.weight"].clone()
    empty = KeyedJaggedTensor.from_lengths(["f"], torch.zeros(0, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    out = ebc(empty).values()
    assert out.shape == (3, 4) and not out.any()
    out.sum().backward()
    assert torch.equal(ebc.state_dict()["t.weight"], before)
    assert int(ebc.optimizer_state_dict()["t"]["step"]) == 1  # the step counts, as in the torch backend
    with torch.no_grad():
        out = ebc(KeyedJaggedTensor.from_lengths(["f"], torch.tensor([1, 1]), torch.tensor([2, 0, 0]))).values()
    torch.testing.assert_close(out[0], 2 * before[1])


def test_meta_collection_for_sharding() -> None:
    """The sharded path first builds the model on the meta device with the configured backend."""
    tables = [TableConfig(name="t", num_embeddings=6, embedding_dim=4, feature_names=["f"])]
    ebc = EmbeddingBagCollection(tables, OPTIMIZERS[2], backend="triton", device="meta")
    assert ebc.backends == {"t": "triton"} and ebc.state_dict()["t.weight"].device.type == "meta"


def test_state_moves_between_triton_and_torch() -> None:
    """Weights, optimizer state and step saved from a triton collection continue training in a torch one."""
    case = random_case(1)
    opt = OPTIMIZERS[6]  # rowwise_adam: per-element and per-row states and the step
    batches = case.batches(4)
    torch.manual_seed(0)
    fused = EmbeddingBagCollection(case.tables, opt, backend="triton")
    plain = EmbeddingBagCollection(case.tables, opt, backend="torch")
    for kjt in batches[:2]:
        fused(kjt).values().square().sum().backward()
    plain.load_state_dict({k: v.clone() for k, v in fused.state_dict().items()})
    plain.load_optimizer_state_dict({t: {n: v.clone() for n, v in s.items()}
                                     for t, s in fused.optimizer_state_dict().items()})
    for kjt in batches[2:]:
        a, b = fused(kjt).values(), plain(kjt).values()
        torch.testing.assert_close(a, b, **TOL)
        a.square().sum().backward()
        b.square().sum().backward()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value, **TOL)
    assert int(fused.optimizer_state_dict()["t0"]["step"]) == int(plain.optimizer_state_dict()["t0"]["step"]) == 4


@pytest.mark.parametrize("sequence", [False, True], ids=["pooled", "sequence"])
def test_graph_path_matches_eager(sequence: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backward through a repeated shape's graph buffers, with the gradient and weights read through
    their addresses (``INDIRECT``), equals the eager backward bit for bit. The capture is replaced by
    running the launches again at each replay (CUDA graphs themselves: tests/gpu)."""
    monkeypatch.setattr(BackwardGraphs, "_capture", lambda self, launch, device: FakeGraph(launch))
    pooling = "none" if sequence else "mean"
    tables = [TableConfig(name="a", num_embeddings=40, embedding_dim=6, feature_names=["f", "g"], pooling=pooling),
              TableConfig(name="b", num_embeddings=5, embedding_dim=6, feature_names=["h"],
                          pooling="none" if sequence else "sum")]
    cls = EmbeddingCollection if sequence else EmbeddingBagCollection
    opt = OPTIMIZERS[2]  # rowwise_adagrad
    torch.manual_seed(0)
    eager = cls(tables, opt, backend="triton")
    torch.manual_seed(0)
    graphed = cls(tables, opt, backend="triton")
    for kernel in graphed.kernels:
        kernel.graphs = BackwardGraphs(enabled=True)
    lengths = torch.tensor([2, 0, 3, 1, 1, 4, 0, 2, 5])  # the same shape every step, empty bags included
    generator = torch.Generator().manual_seed(3)

    def batch() -> KeyedJaggedTensor:
        values = torch.randint(0, 5, (int(lengths.sum()),), generator=generator)
        return KeyedJaggedTensor.from_lengths(["f", "g", "h"], values, lengths)

    def loss(module: torch.nn.Module, kjt: KeyedJaggedTensor, grad_seed: int) -> torch.Tensor:
        out = module(kjt)
        values = torch.cat([out[f].values() for f in out]) if sequence else out.values()
        return (values * torch.randn(values.shape, generator=torch.Generator().manual_seed(grad_seed))).sum()

    for step in range(5):
        kjts = [batch()] if step < 4 else [batch(), batch()]  # last: two forwards of the shape, one backward
        for module in (eager, graphed):
            sum(loss(module, kjt, step * 10 + i) for i, kjt in enumerate(kjts)).backward()
        for key, value in eager.state_dict().items():
            assert torch.equal(graphed.state_dict()[key], value), (step, key)
        for table, states in eager.optimizer_state_dict().items():
            for name, value in states.items():
                assert torch.equal(graphed.optimizer_state_dict()[table][name], value), (step, table, name)
    for kernel in graphed.kernels:
        (entry,) = kernel.graphs._entries.values()
        assert entry.graph.replays == 3  # steps 2, 3 and the first forward of step 4 (its second ran eagerly)

"""The triton backend compiled on a GPU (``make test-gpu``): equal to the torch backend on the same GPU,
deterministic, and chosen by ``auto`` where fbgemm is missing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, EmbeddingCollection, SparseOptimizer, TableConfig
from recframe.sparse import KeyedJaggedTensor
from tests.unit.embedding.reference import OPTIMIZERS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
pytest.importorskip("triton")

TOL = {"atol": 1e-5, "rtol": 1e-5}


def tables(weight_dtype: str = "fp32", pooling: str = "sum") -> list[TableConfig]:
    """Mixed dims (one not a power of two), a shared table, a tiny table whose rows get thousands of lookups."""
    mean = "mean" if pooling == "sum" else pooling
    return [
        TableConfig(name="big", num_embeddings=5000, embedding_dim=64, feature_names=["a", "b"], pooling=pooling,
                    weight_dtype=weight_dtype),
        TableConfig(name="tiny", num_embeddings=3, embedding_dim=64, feature_names=["c"], pooling=mean,
                    weight_dtype=weight_dtype),
        TableConfig(name="odd", num_embeddings=700, embedding_dim=40, feature_names=["d"], pooling=pooling,
                    weight_dtype=weight_dtype),
    ]


def batch(seed: int, size: int = 512, weighted: bool = True) -> KeyedJaggedTensor:
    """Bags of 0-40 ids (empty bags, duplicates within and across bags), on the GPU."""
    g = torch.Generator().manual_seed(seed)
    rows = {"a": 5000, "b": 5000, "c": 3, "d": 700}
    lengths = torch.randint(0, 41, (4 * size,), generator=g)
    per_key = lengths.view(4, size).sum(1).tolist()
    values = torch.cat([torch.randint(0, rows[k], (n,), generator=g) for k, n in zip(rows, per_key, strict=True)])
    weights = torch.rand(values.numel(), generator=g) + 0.5 if weighted else None
    return KeyedJaggedTensor.from_lengths(list(rows), values, lengths, weights=weights).to(torch.device("cuda"))


def train_pair(specs: list[TableConfig], opt: SparseOptimizer, steps: int, tol: dict[str, float],
               sequence: bool = False) -> EmbeddingBagCollection:
    cls = EmbeddingCollection if sequence else EmbeddingBagCollection
    torch.manual_seed(0)
    fused = cls(specs, opt, backend="triton", device="cuda")
    plain = cls(specs, opt, backend="torch", device="cuda")
    plain.load_state_dict(fused.state_dict())
    g = torch.Generator(device="cuda").manual_seed(1)
    for step in range(steps):
        kjt = batch(step)
        a, b = fused(kjt), plain(kjt)
        pairs = [(a[f].values(), b[f].values()) for f in b] if sequence else [(a.values(), b.values())]
        loss_a, loss_b = 0.0, 0.0
        for out_a, out_b in pairs:
            torch.testing.assert_close(out_a, out_b, **tol)
            grad = torch.randn(out_b.shape, device="cuda", generator=g)
            loss_a, loss_b = loss_a + (out_a * grad).sum(), loss_b + (out_b * grad).sum()
        loss_a.backward()
        loss_b.backward()
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(fused.state_dict()[key].float(), value.float(), **tol)
    for name, states in plain.optimizer_state_dict().items():
        for state, value in states.items():
            torch.testing.assert_close(fused.optimizer_state_dict()[name][state].cpu(), value.cpu(), **tol)
    return fused


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o.name}-{o.weight_decay}-{o.weight_decay_mode}")
def test_triton_equals_torch_on_cuda(opt: SparseOptimizer) -> None:
    train_pair(tables(), opt, steps=5, tol=TOL)


@pytest.mark.parametrize("opt", [OPTIMIZERS[1], OPTIMIZERS[6]], ids=lambda o: o.name)
def test_sequence_triton_equals_torch_on_cuda(opt: SparseOptimizer) -> None:
    train_pair(tables(pooling="none"), opt, steps=5, tol=TOL, sequence=True)


@pytest.mark.parametrize("dtype,ulp", [("bf16", 2.0**-8), ("fp16", 2.0**-11)])
def test_low_precision_weights_on_cuda(dtype: str, ulp: float) -> None:
    """Same fp32 math, rounded to nearest even: within one unit in the last place per step (see the CPU test)."""
    train_pair(tables(dtype), OPTIMIZERS[2], steps=5, tol={"atol": 5 * ulp * 0.5, "rtol": 5 * ulp})


def test_triton_is_deterministic() -> None:
    """Two runs from the same start give bitwise equal weights and states (no atomics, fixed sum order)."""
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        ebc = EmbeddingBagCollection(tables(), OPTIMIZERS[6], backend="triton", device="cuda")
        for step in range(3):
            out = ebc(batch(step)).values()
            out.backward(torch.randn(out.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(step)))
        results.append((ebc.state_dict(), ebc.optimizer_state_dict()))
    for key, value in results[0][0].items():
        assert torch.equal(value, results[1][0][key])
    for name, states in results[0][1].items():
        for state, value in states.items():
            assert torch.equal(value, results[1][1][name][state])


def test_auto_picks_triton_on_cuda_without_fbgemm() -> None:
    from recframe.embedding.kernels.fbgemm import fbgemm_import_error

    ebc = EmbeddingBagCollection(tables(), OPTIMIZERS[2], backend="auto", device="cuda")
    expected = "fbgemm" if fbgemm_import_error() is None else "triton"
    assert set(ebc.backends.values()) == {expected}


def test_mlperf_like_hot_rows() -> None:
    """A 3-row table looked up 8192 times a batch next to a large one: long segments, many partial sums."""
    specs = [dataclasses.replace(t, num_embeddings=n) for t, n in zip(tables()[:2], (200_000, 3), strict=True)]
    opt = OPTIMIZERS[2]
    torch.manual_seed(0)
    fused = EmbeddingBagCollection(specs, opt, backend="triton", device="cuda")
    plain = EmbeddingBagCollection(specs, opt, backend="torch", device="cuda")
    plain.load_state_dict(fused.state_dict())
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        lengths = torch.ones(3 * 8192, dtype=torch.int64)
        values = torch.cat([torch.randint(0, 200_000, (2 * 8192,), generator=g), torch.randint(0, 3, (8192,),
                                                                                               generator=g)])
        kjt = KeyedJaggedTensor.from_lengths(["a", "b", "c"], values, lengths).to(torch.device("cuda"))
        a, b = fused(kjt).values(), plain(kjt).values()
        torch.testing.assert_close(a, b, **TOL)
        grad = torch.randn_like(a)
        a.backward(grad)
        b.backward(grad)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value, **TOL)


@pytest.mark.parametrize("sequence", [False, True])
def test_forward_without_autograd_on_cuda(sequence: bool) -> None:
    """Evaluation (no_grad) runs the same forward kernels and leaves the tables untouched."""
    cls = EmbeddingCollection if sequence else EmbeddingBagCollection
    specs = tables(pooling="none" if sequence else "sum")
    torch.manual_seed(0)
    fused = cls(specs, OPTIMIZERS[2], backend="triton", device="cuda")
    plain = cls(specs, OPTIMIZERS[2], backend="torch", device="cuda")
    plain.load_state_dict(fused.state_dict())
    kjt = batch(0, weighted=not sequence)
    with torch.no_grad():
        a, b = fused(kjt), plain(kjt)
    pairs = [(a[f].values(), b[f].values()) for f in b] if sequence else [(a.values(), b.values())]
    for out_a, out_b in pairs:
        torch.testing.assert_close(out_a, out_b, **TOL)
    for key, value in plain.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value)


def fixed_shape_batch(seed: int, weighted: bool, size: int = 256) -> KeyedJaggedTensor:
    """The same lengths every seed (so the backward's shape repeats and gets a CUDA graph), new ids and weights."""
    lengths = torch.randint(0, 6, (4 * size,), generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    rows = {"a": 5000, "b": 5000, "c": 3, "d": 700}
    per_key = lengths.view(4, size).sum(1).tolist()
    values = torch.cat([torch.randint(0, rows[k], (n,), generator=g) for k, n in zip(rows, per_key, strict=True)])
    weights = torch.rand(values.numel(), generator=g) + 0.5 if weighted else None
    return KeyedJaggedTensor.from_lengths(list(rows), values, lengths, weights=weights).to(torch.device("cuda"))


def graphed_and_eager(specs: list[TableConfig], opt: SparseOptimizer, sequence: bool):  # noqa: ANN201
    cls = EmbeddingCollection if sequence else EmbeddingBagCollection
    torch.manual_seed(0)
    graphed = cls(specs, opt, backend="triton", device="cuda")
    eager = cls(specs, opt, backend="triton", device="cuda")
    eager.load_state_dict(graphed.state_dict())
    for kernel in eager.kernels:
        kernel.graphs.enabled = False
    assert all(kernel.graphs.enabled for kernel in graphed.kernels)
    return graphed, eager


def train_both(modules: tuple, kjts: list[KeyedJaggedTensor], seed: int, sequence: bool) -> None:
    for module in modules:
        total = 0.0
        for i, kjt in enumerate(kjts):
            out = module(kjt)
            generator = torch.Generator("cuda").manual_seed(seed + i)
            for values in [out[f].values() for f in out] if sequence else [out.values()]:
                total = total + (values * torch.randn(values.shape, device="cuda", generator=generator)).sum()
        total.backward()


def assert_bitwise_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for key, value in b.state_dict().items():
        assert torch.equal(a.state_dict()[key], value), key
    for table, states in b.optimizer_state_dict().items():
        for name, value in states.items():
            assert torch.equal(a.optimizer_state_dict()[table][name], value), (table, name)


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts CUDA graph replays (so a test sees that steps replayed rather than fell back to eager)."""
    count = [0]
    replay = torch.cuda.CUDAGraph.replay

    def counting(self) -> None:  # noqa: ANN001
        count[0] += 1
        replay(self)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counting)
    return count


@pytest.mark.parametrize("sequence,weighted", [(False, False), (False, True), (True, False)],
                         ids=["pooled", "pooled-weighted", "sequence"])
def test_cuda_graph_backward_equals_eager(sequence: bool, weighted: bool, replays: list[int]) -> None:
    """A repeated shape is captured at its second step and replayed after: bit for bit the eager result,
    also when two forwards of the shape precede one backward (the second runs eagerly)."""
    specs = tables(pooling="none" if sequence else "sum")
    graphed, eager = graphed_and_eager(specs, OPTIMIZERS[2], sequence)
    plain = (EmbeddingCollection if sequence else EmbeddingBagCollection)(specs, OPTIMIZERS[2], backend="torch",
                                                                          device="cuda")
    plain.load_state_dict(graphed.state_dict())
    for step in range(6):
        kjts = [fixed_shape_batch(step, weighted)] + ([fixed_shape_batch(100 + step, weighted)] if step == 5 else [])
        train_both((graphed, eager, plain), kjts, seed=10 * step, sequence=sequence)
        assert_bitwise_equal(graphed, eager)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(graphed.state_dict()[key], value, **TOL)
    for kernel in graphed.kernels:
        graphs = [entry.graph for entry in kernel.graphs._entries.values()]
        assert graphs and all(isinstance(g, torch.cuda.CUDAGraph) for g in graphs)
    assert replays[0] == 4 * len(graphed.kernels)  # steps 2-5 of every kernel (step 1 captured, step 0 eager)


def test_cuda_graph_reads_each_steps_gradient_and_weights(replays: list[int]) -> None:
    """New gradient and weight tensors every step (three of each kept alive, so their addresses differ):
    the replays read them through the addresses written before each replay."""
    specs = tables()[:1]  # one kernel: 'big', features a and b
    graphed, eager = graphed_and_eager(specs, OPTIMIZERS[3], sequence=False)  # rowwise_adagrad with l2 decay
    lengths = torch.randint(0, 6, (2 * 128,), generator=torch.Generator().manual_seed(5)).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    grads = [torch.randn(128, 2 * 64, device="cuda", generator=g) for _ in range(3)]
    per_id = [torch.rand(int(lengths.sum()), device="cuda", generator=g) + 0.5 for _ in range(3)]
    addresses = set()
    for step in range(7):
        values = torch.randint(0, 5000, (int(lengths.sum()),), device="cuda", generator=g)
        kjt = KeyedJaggedTensor.from_lengths(["a", "b"], values, lengths, weights=per_id[step % 3])
        for module in (graphed, eager):
            (kernel,), (prep,) = module.kernels, module.inputs
            ids, offsets, weights = prep(kjt)
            weights = weights.float().contiguous()
            _, keys, grad_rows, claim = kernel.lookup(ids, offsets, weights, True)
            kernel.apply_gradient(keys, grad_rows, weights, grads[step % 3], claim)
        assert_bitwise_equal(graphed, eager)
        (entry,) = graphed.kernels[0].graphs._entries.values() or [None]
        if entry is not None:
            addresses.add(entry.addresses)
    assert replays[0] == 5 and len(addresses) == 3


def test_cuda_graphs_follow_moved_storage_and_a_new_lr(replays: list[int]) -> None:
    """New weight storage (as after .to()) or a new learning rate drops the graphs: that step runs eagerly,
    later ones are captured again, and every step equals the eager collection's."""
    graphed, eager = graphed_and_eager(tables(), OPTIMIZERS[1], sequence=False)
    for step in range(9):
        if step == 3:
            for module in (graphed, eager):
                for kernel in module.kernels:
                    kernel.weight = kernel.weight.clone()
                    kernel.momentum1 = kernel.momentum1.clone()
        if step == 6:  # a schedule changing the lr of both collections' optimizers (each object once)
            for opt in {id(k.spec.optimizer): k.spec.optimizer for m in (graphed, eager) for k in m.kernels}.values():
                opt.lr *= 0.5
        train_both((graphed, eager), [fixed_shape_batch(step, weighted=True)], seed=step, sequence=False)
        assert_bitwise_equal(graphed, eager)
    for kernel in graphed.kernels:
        (entry,) = kernel.graphs._entries.values()
        assert entry.graph is not None and entry.fingerprint == kernel._fingerprint()
    assert replays[0] == 3 * len(graphed.kernels)  # steps 2, 5 and 8 replay; 3 and 6 drop; 1, 4 and 7 capture


def test_step_counting_optimizers_run_eagerly() -> None:
    """adam's bias correction changes every step (a launch argument): no graphs for it."""
    ebc = EmbeddingBagCollection(tables(), OPTIMIZERS[5], backend="triton", device="cuda")
    assert OPTIMIZERS[5].name in ("adam", "rowwise_adam", "lamb")
    assert not any(kernel.graphs.enabled for kernel in ebc.kernels)

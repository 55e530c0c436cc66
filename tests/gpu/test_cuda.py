"""CUDA paths (run on a GPU machine: `pytest -m gpu tests/gpu`): the same numbers as on the CPU."""

from __future__ import annotations

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.sparse import Batch, KeyedJaggedTensor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TABLES = [
    TableConfig(name="t0", num_embeddings=50, embedding_dim=8, feature_names=["f0", "f1"]),
    TableConfig(name="t1", num_embeddings=30, embedding_dim=16, feature_names=["f2"], pooling="mean"),
]


def random_kjt(seed: int, batch: int = 6) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (3 * batch,), generator=g)
    per_key = lengths.view(3, batch).sum(1).tolist()
    values = torch.cat([torch.randint(0, n, (k,), generator=g) for n, k in zip((50, 50, 30), per_key, strict=True)])
    weights = torch.rand(values.numel(), generator=g)
    return KeyedJaggedTensor.from_lengths(["f0", "f1", "f2"], values, lengths, weights=weights)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad", "adam", "rowwise_adam", "lamb"])
def test_torch_backend_on_cuda_matches_cpu(optimizer: str) -> None:
    opt = SparseOptimizer(name=optimizer, lr=0.05)
    torch.manual_seed(0)
    cpu = EmbeddingBagCollection(TABLES, opt, backend="torch", device="cpu")
    cuda = EmbeddingBagCollection(TABLES, opt, backend="torch", device="cuda")
    cuda.load_state_dict(cpu.state_dict())
    for step in range(4):
        kjt = random_kjt(step)
        out_cpu, out_cuda = cpu(kjt).values(), cuda(kjt.to("cuda")).values()
        torch.testing.assert_close(out_cuda.cpu(), out_cpu, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(out_cpu)
        out_cpu.backward(grad)
        out_cuda.backward(grad.cuda())
    for name, weight in cpu.state_dict().items():
        torch.testing.assert_close(cuda.state_dict()[name].cpu(), weight, atol=1e-5, rtol=1e-5)


def test_batch_pinned_copy_to_cuda_keeps_contents() -> None:
    kjt = random_kjt(7)
    batch = Batch(dense_features=torch.rand(6, 13), sparse_features=kjt, labels=torch.rand(6))
    pinned = batch.pin_memory()
    assert pinned.dense_features.is_pinned() and pinned.sparse_features.values().is_pinned()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        moved = pinned.to(torch.device("cuda"), non_blocking=True)
        moved.record_stream(stream)
    stream.synchronize()
    assert moved.sparse_features.values().device.type == "cuda"
    assert torch.equal(moved.sparse_features.values().cpu(), kjt.values())
    assert torch.equal(moved.sparse_features.lengths().cpu(), kjt.lengths())
    torch.testing.assert_close(moved.sparse_features.weights().cpu(), kjt.weights())
    assert moved.sparse_features.keys() == kjt.keys() and moved.sparse_features.stride() == 6

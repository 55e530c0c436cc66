"""Pooled outputs in autocast's dtype on a GPU (``output_dtype="auto"``, ``make test-gpu``).

The compiled triton kernels store the fp32 sums rounded once to bf16/fp16 and read the 16-bit
gradient directly, in the eager and in the CUDA-graphed backward: the outputs equal the fp32
output cast, and the tables equal those trained through that cast, bit for bit; a DLRM-DCN step
under bf16 autocast gives the logits, dense gradients and tables of today's cast in the model.
"""

from __future__ import annotations

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.models import DLRM_DCN
from recframe.sparse import Batch
from tests.gpu.test_triton_gpu import assert_bitwise_equal, fixed_shape_batch, replays, tables  # noqa: F401
from tests.unit.embedding.reference import OPTIMIZERS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
pytest.importorskip("triton")


def auto_and_fp32(specs: list[TableConfig], opt: SparseOptimizer) -> tuple[EmbeddingBagCollection, ...]:
    torch.manual_seed(0)
    auto = EmbeddingBagCollection(specs, opt, backend="triton", device="cuda", output_dtype="auto")
    fp32 = EmbeddingBagCollection(specs, opt, backend="triton", device="cuda")
    fp32.load_state_dict(auto.state_dict())
    assert all(kernel.graphs.enabled for kernel in auto.kernels + fp32.kernels)
    return auto, fp32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_16_bit_output_with_graphed_backward_equals_the_cast(dtype: torch.dtype, weighted: bool,
                                                             replays: list[int]) -> None:  # noqa: F811
    """4 steps of one shape (captured at step 1, replayed at 2 and 3): outputs and tables bit for bit."""
    auto, fp32 = auto_and_fp32(tables(), OPTIMIZERS[2])
    g = torch.Generator(device="cuda").manual_seed(1)
    for step in range(4):
        kjt = fixed_shape_batch(step, weighted)
        with torch.autocast("cuda", dtype=dtype):
            out, reference = auto(kjt).values(), fp32(kjt).values()
        assert out.dtype == dtype and reference.dtype == torch.float32
        assert torch.equal(out, reference.to(dtype)), step
        grad = torch.randn(out.shape, device="cuda", generator=g).to(dtype)
        out.backward(grad)
        reference.to(dtype).backward(grad)
        assert_bitwise_equal(auto, fp32)
    for kernel in auto.kernels:
        assert {entry.grad_dtype for entry in kernel.graphs._entries.values()} == {dtype}
    assert replays[0] == 2 * 2 * len(auto.kernels)  # steps 2 and 3 of both collections' kernels


def bf16_step(models: list, optimizers: list, step: int) -> list[tuple[torch.Tensor, torch.Tensor, list]]:
    """One training step of each model under bf16 autocast on the same batch: (logits, loss, dense gradients)."""
    kjt = fixed_shape_batch(step, weighted=False)
    g = torch.Generator().manual_seed(step)
    batch = Batch(torch.rand(256, 13, generator=g).cuda(), kjt, torch.randint(0, 2, (256,), generator=g).float()
                  .cuda())
    results = []
    for model, optimizer in zip(models, optimizers, strict=True):
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(batch)
        loss = model.loss(logits.float(), batch.labels).total
        loss.backward()
        results.append((logits.detach(), loss.detach(), [p.grad.clone() for p in model.parameters()
                                                          if p.grad is not None]))
        optimizer.step()
    return results


def test_dlrm_dcn_step_under_bf16_autocast_is_bit_identical(replays: list[int]) -> None:  # noqa: F811
    """Three steps with a dense SGD step between: logits, loss, dense gradients and tables equal."""
    specs = [TableConfig(name=f"t{i}", num_embeddings=2000, embedding_dim=64, feature_names=[f]) for i, f in
             enumerate("abcd")]
    models = []
    for output_dtype in ("auto", "fp32"):
        torch.manual_seed(0)
        ebc = EmbeddingBagCollection(specs, OPTIMIZERS[2], backend="triton", device="cuda", output_dtype=output_dtype)
        models.append(DLRM_DCN(ebc, 13, [64, 64], [128, 64], num_cross_layers=3, low_rank=32).cuda())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    for step in range(3):
        (a_logits, a_loss, a_grads), (b_logits, b_loss, b_grads) = bf16_step(models, optimizers, step)
        assert torch.equal(a_logits, b_logits) and torch.equal(a_loss, b_loss), step
        assert len(a_grads) == len(b_grads) > 0 and all(torch.equal(x, y) for x, y in zip(a_grads, b_grads,
                                                                                          strict=True)), step
        assert_bitwise_equal(models[0].embeddings, models[1].embeddings)
    assert replays[0] > 0


@pytest.fixture
def one_nccl_rank() -> object:
    """A process group of this process alone (NCCL), as Lightning's one-GPU run shards the model (world 1)."""
    import torch.distributed as dist

    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1, device_id=torch.device("cuda", 0))
    yield
    dist.destroy_process_group()


def test_sharded_one_gpu_dlrm_dcn_carries_bf16_bit_identically(replays: list[int],  # noqa: F811
                                                               one_nccl_rank: object) -> None:
    """The training path on one GPU shards at world 1 (table_wise): with ``auto`` the local triton lookups and the
    all-to-all carry bf16 (``OutputDist.exact_in_16_bit``); logits, dense gradients and tables equal ``fp32``'s."""
    from recframe.distributed import ShardingPlan, TablePlacement, shard_model

    specs = [TableConfig(name=f"t{i}", num_embeddings=2000, embedding_dim=64, feature_names=[f]) for i, f in
             enumerate("abcd")]
    plan = ShardingPlan(1, {t.name: TablePlacement("table_wise", [0], compute_kernel="triton") for t in specs})
    models = []
    for output_dtype in ("auto", "fp32"):
        torch.manual_seed(0)
        ebc = EmbeddingBagCollection(specs, OPTIMIZERS[2], backend="triton", device="cuda", output_dtype=output_dtype)
        models.append(shard_model(DLRM_DCN(ebc, 13, [64, 64], [128, 64], num_cross_layers=3, low_rank=32).cuda(),
                                  plan, device=torch.device("cuda")))
    assert models[0].embeddings.output_dist.exact_in_16_bit
    assert {ebc.output_dtype for ebc in models[0].embeddings.local_collections()} == {"auto"}
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05) for m in models]
    for step in range(3):
        (a_logits, a_loss, a_grads), (b_logits, b_loss, b_grads) = bf16_step(models, optimizers, step)
        assert torch.equal(a_logits, b_logits) and torch.equal(a_loss, b_loss), step
        assert len(a_grads) == len(b_grads) > 0 and all(torch.equal(x, y) for x, y in zip(a_grads, b_grads,
                                                                                          strict=True)), step
        a_tables, b_tables = models[0].embeddings.state_dict(), models[1].embeddings.state_dict()
        assert all(torch.equal(a_tables[k], b_tables[k]) for k in b_tables), step
    assert replays[0] > 0

"""DLRM-DCN and DLRM (with dense features) with their pooled embeddings written in autocast's dtype
(``tables.output_dtype=auto``).

The collection's bf16 output under autocast must give the numbers of the fp32 output cast by the model
(DLRM-DCN's ``in_autocast_dtype``, DLRM's bmm under autocast): logits, loss, dense gradients and table updates equal
bit for bit. DLRM without dense features stays fp32: there bf16 outputs would differ (tested).
Triton runs through its interpreter on CPU (tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.models import DLRM, DLRM_DCN
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.vocab import OutputDtype

FEATURES = ["a", "b", "c"]
ROWS = 20


def _triton_ok() -> bool:
    try:
        from recframe.embedding.kernels import triton_kernels
    except Exception:  # no triton: the triton case skips
        return False
    return triton_kernels.INTERPRETED


def _dcn(backend: str, output_dtype: str) -> DLRM_DCN:
    tables = [TableConfig(name=f"t_{n}", num_embeddings=ROWS, embedding_dim=d, feature_names=[n])
              for n, d in zip(FEATURES, [8, 4, 8], strict=True)]  # two kernel groups (dims 8 and 4)
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad", lr=0.1), backend=backend,
                                 output_dtype=output_dtype)
    return DLRM_DCN(ebc, 4, [16, 8], [16], num_cross_layers=2, low_rank=4)


def _dlrm(backend: str, output_dtype: str, num_dense: int = 4) -> DLRM:
    tables = [TableConfig(name=f"t_{n}", num_embeddings=ROWS, embedding_dim=8, feature_names=[n]) for n in FEATURES]
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad", lr=0.1), backend=backend,
                                 output_dtype=output_dtype)
    return DLRM(ebc, num_dense, [16, 8] if num_dense else [], [16])


def _batch(batch: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (len(FEATURES), batch), generator=g)
    lengths[0, 0] = 0  # an empty bag
    values = torch.randint(0, ROWS, (int(lengths.sum()),), generator=g)
    kjt = KeyedJaggedTensor.from_lengths(FEATURES, values, lengths.flatten())
    return Batch(torch.rand(batch, 4, generator=g), kjt, torch.randint(0, 2, (batch,), generator=g).float())


BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not _triton_ok(),
                                                                    reason="needs triton's interpreter"))]


def _two_steps(models: list, num_dense: int = 4) -> list[tuple]:
    """Two bf16-autocast steps of each model (dense SGD between them), per step: per model (pooled dtype, logits,
    loss, dense grads, tables after the step's sparse update)."""
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    steps = []
    for step in range(2):
        batch = _batch(16, seed=step)
        if not num_dense:
            batch = Batch(batch.dense_features[:, :0], batch.sparse_features, batch.labels)
        results = []
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pooled = model.embeddings(batch.sparse_features).values()
                logits = model(batch)
            loss = model.loss(logits.float(), batch.labels).total
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            results.append((pooled.dtype, logits.detach(), loss.detach(), grads,
                            {k: v.clone() for k, v in model.embeddings.state_dict().items()}))
            optimizer.step()
        steps.append(results)
    return steps


@pytest.mark.parametrize("model", ["dlrm_dcn", "dlrm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_embeddings_equal_the_cast_fp32_ones_bit_for_bit(backend: str, model: str) -> None:
    """Two steps (dense SGD between them): logits, loss, dense grads and tables equal, auto against fp32."""
    build = _dcn if model == "dlrm_dcn" else _dlrm
    models = []
    for output_dtype in ("auto", "fp32"):
        torch.manual_seed(0)
        models.append(build(backend, output_dtype))
    auto, fp32 = models
    assert auto.embeddings.output_dtype == OutputDtype.auto and fp32.embeddings.output_dtype == OutputDtype.fp32
    initial = {k: v.clone() for k, v in fp32.embeddings.state_dict().items()}
    for step, results in enumerate(_two_steps(models)):
        (a_dtype, a_logits, a_loss, a_grads, a_tables), (b_dtype, b_logits, b_loss, b_grads, b_tables) = results
        assert (a_dtype, b_dtype) == (torch.bfloat16, torch.float32)
        assert a_logits.dtype == torch.bfloat16 and torch.equal(a_logits, b_logits), step
        assert torch.equal(a_loss, b_loss), step
        assert len(a_grads) == len(b_grads) > 0
        assert all(torch.equal(x, y) for x, y in zip(a_grads, b_grads, strict=True)), step
        assert all(torch.equal(a_tables[k], b_tables[k]) for k in b_tables), step
    assert any(not torch.equal(b_tables[k], initial[k]) for k in b_tables)  # the tables were updated


def test_dlrm_without_dense_features_would_differ_in_bf16() -> None:
    """Why DLRM opts in only with dense features: without them its embeddings feed the interaction and the top MLP,
    and with bf16 outputs their two gradients are summed in bf16, not fp32: the tables drift apart."""
    models = []
    for output_dtype in ("auto", "fp32"):
        torch.manual_seed(0)
        models.append(_dlrm("torch", output_dtype, num_dense=0))
    tables = [[results[i][4] for results in _two_steps(models, num_dense=0)] for i in (0, 1)]
    assert any(not torch.equal(a[k], b[k]) for a, b in zip(*tables, strict=True) for k in a)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["+experiment=dlrm_dcn"], {"embeddings": "auto"}),
    (["+experiment=dlrm_dcn", "tables.output_dtype=fp32"], {"embeddings": "fp32"}),
    (["+experiment=dlrm"], {"embeddings": "auto"}),  # its dot interaction's bmm casts them
    (["+experiment=dlrm", "features.dense=[]", "model.bottom_mlp=[]"], {"embeddings": "fp32"}),  # no dense: fp32
    (["+experiment=deepfm"], {"embeddings": "fp32", "wide_embeddings": "fp32"}),  # FM sums in fp32
])
def test_tables_output_dtype_reaches_the_collections_of_models_that_read_them_in_autocasts_dtype(
        overrides: list[str], expected: dict[str, str]) -> None:
    from recframe.config.compose import compose_config
    from recframe.training.builders import build_model

    cfg = compose_config([*overrides, "tables.num_embeddings=50", "run_dir=unused"])
    assert cfg.tables.output_dtype == OutputDtype.auto or "tables.output_dtype=fp32" in overrides
    model = build_model(cfg, embedding_device="meta")
    assert {name: getattr(model, name).output_dtype for name in expected} == expected

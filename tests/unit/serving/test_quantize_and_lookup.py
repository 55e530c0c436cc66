"""recframe.serving: quantized rows against a plain-Python reference, inference lookups against the training
collection, and the serving model against the trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recframe.config.compose import compose_config
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.serving.embeddings import InferenceEmbeddingBags
from recframe.serving.program import ServingModel
from recframe.serving.quantize import QuantizedRows
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.training.builders import build_datamodule, build_model


def reference_rows(weight: np.ndarray, bits: int) -> np.ndarray:
    """Row-wise min/max quantization and read-back, one value at a time (scale and bias rounded as stored)."""
    levels = 2**bits - 1
    store = np.float32 if bits == 8 else np.float16
    out = np.empty_like(weight)
    for r, row in enumerate(weight):
        scale = float(store((row.max() - row.min()) / levels))
        bias = float(store(row.min()))
        for c, value in enumerate(row):
            q = min(max(round((value - bias) / scale), 0), levels) if scale > 0 else 0
            out[r, c] = q * scale + bias
    return out


@pytest.mark.parametrize("mode,bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("dim", [1, 6, 7])
def test_quantized_rows_equal_the_reference(mode: str, bits: int, dim: int) -> None:
    weight = torch.randn(20, dim, generator=torch.Generator().manual_seed(dim)) * 0.3
    weight[3] = 0.25  # a constant row is exact
    table = QuantizedRows.from_weight(weight, mode)
    got = table.rows(torch.arange(20))
    want = torch.from_numpy(reference_rows(weight.numpy(), bits))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.equal(got[3], weight[3])
    span = (weight.amax(1) - weight.amin(1)) / (2**bits - 1)
    assert ((got - weight).abs() <= span[:, None] / 2 + 2e-3 * weight.abs().amax()).all()
    assert table.bytes_per_row == (dim if bits == 8 else (dim + 1) // 2) + (8 if bits == 8 else 4)


def test_fp16_and_none_rows() -> None:
    weight = torch.randn(5, 3)
    assert torch.equal(QuantizedRows.from_weight(weight, "none").rows(torch.tensor([4, 0])), weight[[4, 0]])
    assert torch.equal(QuantizedRows.from_weight(weight, "fp16").rows(torch.tensor([1])), weight[[1]].half().float())
    assert QuantizedRows.from_weight(weight, "fp16").num_bytes == 5 * 3 * 2


TABLES = [
    TableConfig(name="a", num_embeddings=13, embedding_dim=4, feature_names=["f0", "f1"]),  # shared
    TableConfig(name="b", num_embeddings=7, embedding_dim=8, feature_names=["f2"], pooling="mean",
                id_policy="modulo"),
    TableConfig(name="c", num_embeddings=5, embedding_dim=4, feature_names=["f3"], pooling="mean"),
]


def random_kjt(keys: list[str], batch: int, seed: int) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (len(keys) * batch,), generator=g)  # empty bags too
    values = torch.randint(0, 5, (int(lengths.sum()),), generator=g)
    values[::3] += 40  # out of 'b''s range: hashed (modulo); 'a' and 'c' get in-range ids only below
    for k, key in enumerate(keys):
        lo, hi = int(lengths[: k * batch].sum()), int(lengths[: (k + 1) * batch].sum())
        if key != "f2":
            values[lo:hi] %= 5
    return KeyedJaggedTensor.from_lengths(keys, values, lengths)


@pytest.mark.parametrize("keys", [["f0", "f1", "f2", "f3"], ["f3", "extra", "f2", "f0", "f1"]])
def test_inference_lookups_equal_the_training_collection(keys: list[str]) -> None:
    ebc = EmbeddingBagCollection(TABLES, SparseOptimizer(), backend="torch")
    lookup = InferenceEmbeddingBags.from_collection(ebc, "none", batch_keys=keys)
    for seed in range(3):
        kjt = random_kjt(keys, batch=6, seed=seed)
        want, got = ebc(kjt), lookup(kjt)
        assert got.keys() == want.keys() == ["f0", "f1", "f2", "f3"]
        torch.testing.assert_close(got.values(), want.values(), rtol=1e-6, atol=1e-6)
    assert lookup.num_bytes == (13 + 5) * 4 * 4 + 7 * 8 * 4


def test_int8_lookups_are_close_and_smaller() -> None:
    ebc = EmbeddingBagCollection(TABLES, SparseOptimizer(), backend="torch")
    keys = ["f0", "f1", "f2", "f3"]
    full = InferenceEmbeddingBags.from_collection(ebc, "none", keys)
    int8 = InferenceEmbeddingBags.from_collection(ebc, "int8", keys)
    kjt = random_kjt(keys, batch=6, seed=5)
    torch.testing.assert_close(int8(kjt).values(), full(kjt).values(), rtol=0, atol=0.01)
    assert int8.num_bytes == (13 + 5) * (4 + 8) + 7 * (8 + 8)  # a float32 scale and bias per row


def test_an_id_outside_an_error_table_pools_as_missing() -> None:
    ebc = EmbeddingBagCollection(TABLES[2:], SparseOptimizer(), backend="torch")  # 'c': mean, id_policy error
    lookup = InferenceEmbeddingBags.from_collection(ebc, "none", ["f3"])
    kjt = KeyedJaggedTensor.from_lengths(["f3"], torch.tensor([1, 99, 2]), torch.tensor([2, 1]))
    out = lookup(kjt).values()
    weight = ebc.state_dict()["c.weight"]
    torch.testing.assert_close(out[0], weight[1] / 2)  # 99 weighs 0; the bag's size stays 2
    torch.testing.assert_close(out[1], weight[2])


@pytest.mark.parametrize("experiment", ["dlrm", "deepfm"])
def test_the_serving_model_gives_the_trained_models_probabilities(experiment: str) -> None:
    cfg = compose_config([f"+experiment={experiment}", "tables.num_embeddings=200", "tables.row_cap=200",
                          "data.batch_size=16", "run_dir=unused"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch: Batch = next(iter(build_datamodule(cfg).val_dataloader()))
    keys = list(cfg.features.sparse)
    serving = ServingModel(model, keys, "none")
    kjt = batch.sparse_features
    assert kjt.keys() == keys
    lengths = kjt.lengths().view(len(keys), -1)
    with torch.no_grad():
        want = torch.sigmoid(model(batch))
        got = serving(batch.dense_features, kjt.values().long(), lengths.long())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert serving.table_bytes == sum(v.numel() * 4 for k, v in model.state_dict().items() if "embeddings" in k
                                      and k.endswith(".weight") and v.dim() == 2 and v.shape[0] == 200)


def test_a_model_without_pooled_tables_is_refused() -> None:
    with pytest.raises(ValueError, match="only models whose tables are pooled EmbeddingBagCollections"):
        ServingModel(torch.nn.Linear(2, 1), ["f"], "none")
    sequence = TableConfig(name="s", num_embeddings=5, embedding_dim=4, feature_names=["f"], pooling="none")
    with pytest.raises(ValueError, match="sequence tables"):
        InferenceEmbeddingBags([sequence], {"s": torch.zeros(5, 4)}, "none", ["f"])


def test_item_vectors_in_chunks_equal_one_pass_and_top_k_is_exact() -> None:
    from recframe.serving.retrieval import item_vectors, top_k

    cfg = compose_config(["+experiment=two_tower", "tables.row_cap=20", "run_dir=unused"])
    model = build_model(cfg).eval()
    keys = list(model.item_feature_names)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 3, (len(keys) * 11,), generator=g)
    catalog = KeyedJaggedTensor.from_lengths(keys, torch.randint(0, 20, (int(lengths.sum()),), generator=g), lengths)
    whole = item_vectors(model, catalog, batch_size=100)
    torch.testing.assert_close(item_vectors(model, catalog, batch_size=4), whole, rtol=1e-5, atol=1e-6)
    users = torch.randn(7, whole.shape[1], generator=g)
    scores, rows = top_k(users, whole, k=3, chunk=2)
    want = (users @ whole.T).topk(3, dim=1)
    assert torch.equal(rows, want.indices) and torch.allclose(scores, want.values)

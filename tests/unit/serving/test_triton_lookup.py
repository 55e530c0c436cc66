"""The Triton pooled lookup of quantized rows (under Triton's interpreter on CPU) equals the plain-torch path."""

from __future__ import annotations

import pytest
import torch

triton_lookup = pytest.importorskip("recframe.serving.triton_lookup", reason="triton does not import")

from recframe.serving.quantize import QuantizedRows  # noqa: E402


@pytest.mark.parametrize("mode", ["none", "fp16", "int8", "int4"])
@pytest.mark.parametrize("dim", [5, 8])
def test_triton_pooled_rows_equal_gather_and_add(mode: str, dim: int) -> None:
    g = torch.Generator().manual_seed(dim)
    table = QuantizedRows.from_weight(torch.randn(30, dim, generator=g), mode)
    lengths = torch.tensor([3, 0, 1, 4, 2])  # an empty bag too
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    rows = torch.randint(0, 30, (int(lengths.sum()),), generator=g)
    weights = torch.rand(rows.numel(), generator=g)
    weights[2] = 0.0  # an id of another group
    want = torch.zeros(5, dim).index_add_(0, torch.repeat_interleave(torch.arange(5), lengths),
                                          table.rows(rows) * weights[:, None])
    got = triton_lookup.pooled_rows(table, rows, weights, offsets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_inference_lookups_with_the_triton_kernel_equal_the_torch_path() -> None:
    from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    from recframe.serving.embeddings import InferenceEmbeddingBags
    from recframe.sparse import KeyedJaggedTensor

    tables = [TableConfig(name="a", num_embeddings=13, embedding_dim=4, feature_names=["f0", "f1"]),
              TableConfig(name="b", num_embeddings=7, embedding_dim=8, feature_names=["f2"], pooling="mean",
                          id_policy="modulo")]
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(), backend="torch")
    keys = ["f2", "f0", "f1"]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 4, (3 * 6,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths(keys, torch.randint(0, 13, (int(lengths.sum()),), generator=g), lengths)
    for mode in ("none", "int4"):
        plain = InferenceEmbeddingBags.from_collection(ebc, mode, keys, kernel="torch")(kjt).values()
        fused = InferenceEmbeddingBags.from_collection(ebc, mode, keys, kernel="triton")(kjt).values()
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="kernel='cuda'"):
        InferenceEmbeddingBags.from_collection(ebc, "none", keys, kernel="cuda")

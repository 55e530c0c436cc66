"""Serving lookups on a GPU: the compiled Triton kernel (kernel=auto on CUDA) equals the plain-torch path."""

from __future__ import annotations

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.serving.embeddings import InferenceEmbeddingBags
from recframe.sparse import KeyedJaggedTensor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("mode", ["none", "fp16", "int8", "int4"])
def test_the_triton_kernel_on_cuda_equals_the_torch_path(mode: str) -> None:
    tables = [TableConfig(name="a", num_embeddings=1000, embedding_dim=64, feature_names=["f0", "f1"]),
              TableConfig(name="b", num_embeddings=500, embedding_dim=128, feature_names=["f2"], pooling="mean")]
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(), backend="torch")
    keys = ["f0", "f1", "f2"]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 20, (3 * 512,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths(keys, torch.randint(0, 500, (int(lengths.sum()),), generator=g),
                                         lengths).to("cuda")
    auto = InferenceEmbeddingBags.from_collection(ebc, mode, keys).cuda()
    plain = InferenceEmbeddingBags.from_collection(ebc, mode, keys, kernel="torch").cuda()
    assert auto._use_triton(torch.device("cuda"))
    torch.testing.assert_close(auto(kjt).values(), plain(kjt).values(), rtol=1e-5, atol=1e-5)

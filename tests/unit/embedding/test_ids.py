"""Out-of-range ids: a clear error naming feature and table; id_policy='modulo' hashes them into range."""

from __future__ import annotations

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, EmbeddingCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels.fbgemm import fbgemm_import_error
from recframe.sparse import KeyedJaggedTensor

BACKENDS = ["torch"] + (["fbgemm"] if fbgemm_import_error() is None else [])
OPT = SparseOptimizer(name="sgd", lr=1.0)


def tables(policy_b: str = "error", pooling: str = "sum") -> list[TableConfig]:
    return [
        TableConfig(name="ta", num_embeddings=10, embedding_dim=4, feature_names=["a1", "a2"], pooling=pooling),
        TableConfig(name="tb", num_embeddings=6, embedding_dim=4, feature_names=["b"], pooling=pooling,
                    id_policy=policy_b),
    ]


def batch(a1: list[int], a2: list[int], b: list[int]) -> KeyedJaggedTensor:
    """Batch of one sample per feature."""
    return KeyedJaggedTensor.from_lengths(["a1", "a2", "b"], torch.tensor(a1 + a2 + b),
                                          torch.tensor([len(a1), len(a2), len(b)]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad_id", [10, -1])
def test_out_of_range_id_names_feature_and_table(backend: str, bad_id: int) -> None:
    ebc = EmbeddingBagCollection(tables(), OPT, backend=backend)
    ebc(batch([1], [9], [5]))  # in range: fine
    with pytest.raises(ValueError, match=rf"feature 'a2': id {bad_id} \(sample 0\) is outside \[0, 10\) of table 'ta'"):
        ebc(batch([1], [2, bad_id], [5]))
    ec = EmbeddingCollection(tables(pooling="none"), OPT, backend=backend)
    with pytest.raises(ValueError, match=r"feature 'b': id 6 .* of table 'tb'"):
        ec(batch([1], [2], [6]))


@pytest.mark.skipif(fbgemm_import_error() is not None, reason="fbgemm_gpu does not import here")
def test_unchecked_fbgemm_still_refuses_out_of_range_ids() -> None:
    """check_ids=False skips recframe's check; fbgemm's own check still raises (never a crash)."""
    ebc = EmbeddingBagCollection(tables(), OPT, backend="fbgemm", check_ids=False)
    ebc(batch([1], [9], [5]))
    with pytest.raises(RuntimeError):
        ebc(batch([1], [12], [5]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_modulo_policy_hashes_ids_into_range(backend: str) -> None:
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables(policy_b="modulo"), OPT, backend=backend)
    before = ebc.state_dict()["tb.weight"].clone()
    hashed, plain = ebc(batch([1], [2], [8, -1, 3])), ebc(batch([1], [2], [2, 5, 3]))  # 8 % 6, -1 % 6
    assert torch.equal(hashed.values(), plain.values())
    hashed.values()[:, 8:].sum().backward()  # sgd, lr 1: the rows 2, 5, 3 of tb each go down by 1
    changed = (ebc.state_dict()["tb.weight"] != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [2, 3, 5]
    torch.testing.assert_close(ebc.state_dict()["tb.weight"][2], before[2] - 1)
    with pytest.raises(ValueError, match="table 'ta'"):  # the other table of the same kernel still checks
        ebc(batch([10], [2], [8]))


def test_missing_feature_is_named() -> None:
    ebc = EmbeddingBagCollection(tables(), OPT, backend="torch")
    kjt = KeyedJaggedTensor.from_lengths(["a1", "b"], torch.tensor([1, 2]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"features \['a2'\] are missing from the batch"):
        ebc(kjt)

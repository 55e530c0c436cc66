"""The model zoo on the real EmbeddingBagCollection (torch backend): shapes, dtypes, empty bags,
multi-task outputs, table updates through backward, and the contract that lets a sharder swap
the collections."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from recframe.embedding import TableConfig
from recframe.models import DLRM, DLRM_DCN, DeepFM, Task, TwoTower, WideDeep, recall_at_k
from recframe.sparse import Batch, KeyedJaggedTensor, KeyedTensor

from .helpers import ebc, wide_ebc

FEATURES = ["a", "b", "c"]
ROWS = 20
TWO_TASKS = [Task("click"), Task("purchase", weight=2.0)]


def _tables(dims: list[int] | None = None, names: list[str] = FEATURES) -> list[TableConfig]:
    dims = dims or [8] * len(names)
    return [TableConfig(name=f"t_{n}", num_embeddings=ROWS, embedding_dim=d, feature_names=[n])
            for n, d in zip(names, dims, strict=True)]


def _batch(batch: int, num_tasks: int = 1, empty: bool = False, seed: int = 0) -> Batch:
    """3 features, multi-hot bags of 0-3 ids; with ``empty`` feature b has no ids at all."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (len(FEATURES), batch), generator=g)
    lengths[0, 0] = 0  # always at least one empty bag
    if empty:
        lengths[1] = 0
    values = torch.randint(0, ROWS, (int(lengths.sum()),), generator=g)
    kjt = KeyedJaggedTensor.from_lengths(FEATURES, values, lengths.flatten())
    labels = torch.randint(0, 2, (batch, num_tasks) if num_tasks > 1 else (batch,), generator=g).float()
    return Batch(torch.rand(batch, 4, generator=g), kjt, labels)


def _dlrm(tasks: list[Task] | None = None) -> nn.Module:
    return DLRM(ebc(_tables()), 4, [16, 8], [16], tasks=tasks or [Task("label")])


def _dcn(tasks: list[Task] | None = None) -> nn.Module:
    return DLRM_DCN(ebc(_tables([8, 4, 6])), 4, [16, 8], [16], num_cross_layers=2, low_rank=4,
                    tasks=tasks or [Task("label")])


def _deepfm(tasks: list[Task] | None = None) -> nn.Module:
    tasks = tasks or [Task("label")]
    return DeepFM(ebc(_tables()), wide_ebc(_tables(), len(tasks)), 4, [16], tasks=tasks)


def _wide_deep(tasks: list[Task] | None = None) -> nn.Module:
    tasks = tasks or [Task("label")]
    return WideDeep(ebc(_tables([8, 4, 6])), wide_ebc(_tables(), len(tasks)), 4, [16], tasks=tasks)


CTR_MODELS: dict[str, Callable[..., nn.Module]] = {
    "dlrm": _dlrm, "dlrm_dcn": _dcn, "deepfm": _deepfm, "wide_deep": _wide_deep,
}


@pytest.mark.parametrize("name", CTR_MODELS)
@pytest.mark.parametrize("batch_size", [1, 7])
@pytest.mark.parametrize("empty", [False, True])
def test_ctr_model_shapes_and_dtypes(name: str, batch_size: int, empty: bool) -> None:
    torch.manual_seed(0)
    model = CTR_MODELS[name]()
    batch = _batch(batch_size, empty=empty)
    logits = model(batch)
    assert logits.shape == (batch_size,) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())
    loss = model.loss(logits, batch.labels)
    assert loss.total.shape == () and set(loss.per_task) == {"label"}
    loss.total.backward()


@pytest.mark.parametrize("name", CTR_MODELS)
def test_ctr_model_multi_task(name: str) -> None:
    torch.manual_seed(0)
    model = CTR_MODELS[name](TWO_TASKS)
    batch = _batch(6, num_tasks=2)
    logits = model(batch)
    assert logits.shape == (6, 2)
    loss = model.loss(logits, batch.labels)
    assert set(loss.per_task) == {"click", "purchase"}
    assert torch.allclose(loss.total, loss.per_task["click"] + 2.0 * loss.per_task["purchase"])
    assert [t.name for t in model.tasks] == ["click", "purchase"]


@pytest.mark.parametrize("name", CTR_MODELS)
def test_backward_trains_the_tables_and_the_towers(name: str) -> None:
    torch.manual_seed(0)
    model = CTR_MODELS[name]()
    collections = [m for m in (getattr(model, "embeddings", None), getattr(model, "wide_embeddings", None)) if m]
    before = [{k: v.clone() for k, v in c.state_dict().items()} for c in collections]
    batch = _batch(8)
    model.loss(model(batch), batch.labels).total.backward()
    for c, old in zip(collections, before, strict=True):
        changed = [k for k, v in c.state_dict().items() if not torch.equal(v, old[k])]
        assert changed, f"{name}: no table of {type(c).__name__} was updated by backward"
    assert all(p.grad is not None for p in model.parameters()), "every dense parameter gets a gradient"


@pytest.mark.parametrize("name", CTR_MODELS)
def test_key_order_of_the_batch_does_not_matter(name: str) -> None:
    torch.manual_seed(0)
    model = CTR_MODELS[name]().eval()
    batch = _batch(5)
    reordered = Batch(batch.dense_features, batch.sparse_features.permute([2, 0, 1]), batch.labels)
    assert torch.allclose(model(batch), model(reordered), atol=1e-6)


class _Swapped(nn.Module):
    """A stand-in for a sharded collection: only the call signature, no feature attributes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._inner = [inner]  # hidden, so the model cannot reach the original's attributes
        self.calls = 0

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedTensor:
        self.calls += 1
        out = self._inner[0](kjt)
        # same keys and tensors, laid out in reverse key order: the model must read by name
        keys = list(reversed(out.keys()))
        return KeyedTensor.from_tensor_list(keys, [out[k] for k in keys])


@pytest.mark.parametrize("name", CTR_MODELS)
def test_collections_can_be_swapped_like_a_sharder_does(name: str) -> None:
    torch.manual_seed(0)
    model = CTR_MODELS[name]().eval()
    batch = _batch(5)
    expected = model(batch)
    swapped = []
    for attr in ("embeddings", "wide_embeddings"):
        if hasattr(model, attr):
            wrapper = _Swapped(getattr(model, attr))
            setattr(model, attr, wrapper)
            swapped.append(wrapper)
    assert torch.allclose(model(batch), expected, atol=1e-6)
    assert all(w.calls == 1 for w in swapped)


def test_models_report_configuration_errors() -> None:
    with pytest.raises(ValueError, match="same embedding dim"):
        DLRM(ebc(_tables([8, 4, 8])), 4, [16, 8], [16])
    with pytest.raises(ValueError, match="bottom MLP must end at the embedding dim 8"):
        DLRM(ebc(_tables()), 4, [16, 4], [16])
    with pytest.raises(ValueError, match="one weight per task"):
        DeepFM(ebc(_tables()), wide_ebc(_tables(), 1), 4, [16], tasks=TWO_TASKS)
    with pytest.raises(ValueError, match="one weight per task"):
        WideDeep(ebc(_tables()), wide_ebc(_tables(), 2), 4, [16])
    with pytest.raises(ValueError, match="4 dense features"):
        _dlrm()(Batch(torch.zeros(2, 3), _batch(2).sparse_features, torch.zeros(2)))
    with pytest.raises(TypeError, match="EmbeddingBagCollection"):
        DLRM(nn.Linear(2, 2), 4, [16, 8], [16])


# ---- TwoTower ----------------------------------------------------------------------------------

USER, ITEM = ["user_id", "user_history"], ["item_id", "item_category"]


def _two_tower(num_dense: int = 0) -> TwoTower:
    return TwoTower(ebc(_tables([8, 8], USER)), ebc(_tables([8, 4], ITEM)), [16, 6], [12, 6],
                    num_dense_features=num_dense)


def _pairs(batch: int, num_dense: int = 0) -> Batch:
    g = torch.Generator().manual_seed(1)
    lengths = torch.cat([torch.ones(batch), torch.randint(0, 4, (batch,), generator=g), torch.ones(2 * batch)]).long()
    lengths[batch] = 0  # an empty history
    values = torch.randint(0, ROWS, (int(lengths.sum()),), generator=g)
    return Batch(torch.rand(batch, num_dense), KeyedJaggedTensor.from_lengths(USER + ITEM, values, lengths),
                 torch.ones(batch))


@pytest.mark.parametrize("batch_size", [1, 6])
@pytest.mark.parametrize("num_dense", [0, 3])
def test_two_tower_shapes(batch_size: int, num_dense: int) -> None:
    torch.manual_seed(0)
    model = _two_tower(num_dense)
    batch = _pairs(batch_size, num_dense)
    logits = model(batch)
    assert logits.shape == (batch_size, batch_size) and logits.dtype == torch.float32
    users = model.encode_users(batch.sparse_features, batch.dense_features)
    items = model.encode_items(batch.sparse_features)
    assert users.shape == items.shape == (batch_size, 6)
    assert torch.allclose(users.norm(dim=1), torch.ones(batch_size), atol=1e-5)
    assert torch.allclose(logits, users @ items.T / model.temperature, atol=1e-5)
    loss = model.loss(logits, batch.labels)
    assert torch.allclose(loss.total, torch.nn.functional.cross_entropy(logits, torch.arange(batch_size)))
    loss.total.backward()


def test_two_tower_encodes_items_from_item_features_alone() -> None:
    model = _two_tower()
    catalog = KeyedJaggedTensor.from_lengths(ITEM, torch.cat([torch.arange(ROWS), torch.arange(ROWS) % 3]),
                                             torch.ones(2 * ROWS, dtype=torch.int64))
    assert model.encode_items(catalog).shape == (ROWS, 6)
    with pytest.raises(ValueError, match="missing"):
        model.encode_users(catalog)


def test_two_tower_configuration_errors() -> None:
    with pytest.raises(ValueError, match="same dim"):
        TwoTower(ebc(_tables([8, 8], USER)), ebc(_tables([8, 4], ITEM)), [16, 6], [12, 5])
    with pytest.raises(ValueError, match="in both towers"):
        TwoTower(ebc(_tables([8, 8], USER)), ebc(_tables([8, 8], USER)), [6], [6])
    with pytest.raises(ValueError, match="dense inputs"):
        _two_tower(num_dense=2).encode_users(_pairs(3).sparse_features)


def test_recall_at_k() -> None:
    items = torch.eye(5)
    users = torch.tensor([[1.0, 0.5, 0, 0, 0], [0, 0, 0, 0.2, 1.0], [0, 1.0, 0.5, 0.1, 0]])
    targets = torch.tensor([1, 3, 4])
    assert recall_at_k(users, items, targets, k=1) == 0.0
    assert recall_at_k(users, items, targets, k=2) == pytest.approx(2 / 3)
    assert recall_at_k(users, items, targets, k=5) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(users, items, targets, k=6)


def test_dlrm_gives_the_same_logits_on_the_fbgemm_backend() -> None:
    """Models only call the collection: the fbgemm-backed one is a drop-in for the torch one."""
    pytest.importorskip("fbgemm_gpu")
    from recframe.embedding import EmbeddingBagCollection, SparseOptimizer

    torch.manual_seed(0)
    reference = _dlrm()
    fbgemm = EmbeddingBagCollection(_tables(), SparseOptimizer(name="rowwise_adagrad", lr=0.1), backend="fbgemm")
    fbgemm.load_state_dict(reference.embeddings.state_dict())
    model = DLRM(fbgemm, 4, [16, 8], [16])
    model.load_state_dict(reference.state_dict())
    batch = _batch(6)
    assert set(fbgemm.backends.values()) == {"fbgemm"}
    assert torch.allclose(model(batch), reference(batch), atol=1e-5)
    model.loss(model(batch), batch.labels).total.backward()


def test_dcn_under_autocast_equals_the_fp32_concatenation_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """DLRM-DCN casts the pooled embeddings to autocast's dtype before concatenating: the logits, the dense
    gradients and the tables' fused updates are those of the fp32 concatenation cast by the cross net."""
    import copy

    from recframe.models import dlrm as dlrm_module

    torch.manual_seed(0)
    new = _dcn()
    old = copy.deepcopy(new)
    initial = copy.deepcopy(new.embeddings.state_dict())
    batch = _batch(16, seed=3)
    results = []
    for model, cast in ((new, dlrm_module.in_autocast_dtype), (old, lambda values: values)):
        monkeypatch.setattr(dlrm_module, "in_autocast_dtype", cast)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch)
        model.loss(logits.float(), batch.labels).total.backward()
        grads = [p.grad.clone() for n, p in model.named_parameters() if p.grad is not None]
        results.append((logits.detach(), grads, copy.deepcopy(model.embeddings.state_dict())))
    (new_logits, new_grads, new_tables), (old_logits, old_grads, old_tables) = results
    assert new_logits.dtype == torch.bfloat16 and torch.equal(new_logits, old_logits)
    assert len(new_grads) == len(old_grads) > 0
    assert all(torch.equal(a, b) for a, b in zip(new_grads, old_grads, strict=True))
    assert new_tables.keys() == old_tables.keys()
    assert all(torch.equal(new_tables[k], old_tables[k]) for k in new_tables)
    assert any(not torch.equal(new_tables[k], initial[k]) for k in new_tables)  # the tables were updated

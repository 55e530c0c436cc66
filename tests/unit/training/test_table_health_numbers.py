"""Table health's numbers, read from the device in one go, against plain Python over the same rows."""

from __future__ import annotations

import math

import pytest
import torch

from recframe.training.table_health import HISTOGRAM_BINS, NORM_NUMBERS, _table_numbers


def test_table_numbers_match_plain_python() -> None:
    torch.manual_seed(0)
    weight = torch.randn(57, 5)
    state = torch.rand(57)
    counted = torch.tensor([0.5, 0.25, 3.0], dtype=torch.float64)
    values = _table_numbers(weight, [state], counted).tolist()
    norms = [math.sqrt(sum(x * x for x in row)) for row in weight.tolist()]
    total, high, num, low, squares = values[:NORM_NUMBERS]
    assert (num, total, high, low) == pytest.approx((57, sum(norms), max(norms), min(norms)), rel=1e-6)
    assert squares == pytest.approx(sum(n * n for n in norms), rel=1e-6)
    histogram = values[NORM_NUMBERS:NORM_NUMBERS + HISTOGRAM_BINS]
    width = (max(norms) - min(norms)) / HISTOGRAM_BINS
    expected = [0] * HISTOGRAM_BINS
    for n in norms:
        expected[min(HISTOGRAM_BINS - 1, int((n - min(norms)) / width))] += 1
    assert histogram == expected
    rest = values[NORM_NUMBERS + HISTOGRAM_BINS:]
    assert rest[:2] == pytest.approx([state.double().mean().item(), state.max().item()])
    assert rest[2:] == [0.5, 0.25, 3.0]


def test_equal_rows_fall_in_the_first_bucket() -> None:
    values = _table_numbers(torch.ones(4, 3), [], None).tolist()
    assert values[NORM_NUMBERS] == 4 and sum(values[NORM_NUMBERS:]) == 4


def test_training_start_computes_the_numbers_once_and_logs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """on_train_start runs the write's kernels once (their first use), unlogged; off without a period or logger."""
    from types import SimpleNamespace

    from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    from recframe.training import table_health

    collection = EmbeddingBagCollection([TableConfig(name="t", num_embeddings=6, embedding_dim=3,
                                                     feature_names=["f"])], SparseOptimizer(), backend="torch")
    module = SimpleNamespace(device=torch.device("cpu"))
    monkeypatch.setattr(table_health, "embedding_collections", lambda _: {"ebc": collection})
    calls = []
    monkeypatch.setattr(table_health, "run_numbers", lambda *a: calls.append(a) or torch.zeros(3))
    logged = []
    health = table_health.TableHealth(every_n_steps=5)
    monkeypatch.setattr(health, "_log", lambda *a: logged.append(a))
    trainer = SimpleNamespace(logger=object(), is_global_zero=True, world_size=1)
    health.on_train_start(trainer, module)  # type: ignore[arg-type]
    assert len(calls) == 1 and not logged
    health.on_train_start(SimpleNamespace(logger=None, is_global_zero=True, world_size=1), module)  # type: ignore
    table_health.TableHealth(every_n_steps=0).on_train_start(trainer, module)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_write_reads_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """All tables' numbers are computed without a host read (on a GPU each would wait for the device: bincount,
    tensors made from Python numbers); only the write's one ``tolist`` reads them."""
    from types import SimpleNamespace

    from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    from recframe.sparse import KeyedJaggedTensor
    from recframe.training import table_health
    from tests.sync_detector import HostReadDetector

    tables = [TableConfig(name=f"t{i}", num_embeddings=50 + i, embedding_dim=4, feature_names=[f"f{i}"])
              for i in range(3)]
    collection = EmbeddingBagCollection(tables, SparseOptimizer(), backend="torch")
    monkeypatch.setattr(table_health, "embedding_collections", lambda _: {"ebc": collection})
    health = table_health.TableHealth(every_n_steps=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    health.on_fit_start(None, module)  # type: ignore[arg-type]
    features = KeyedJaggedTensor.from_lengths(["f0", "f1", "f2"], torch.tensor([1, 2, 3, 4, 5, 6]),
                                              torch.tensor([1, 1, 1, 1, 1, 1]))
    health.counts.update(features)  # type: ignore[union-attr]  (the first batch of a key layout copies it once)
    with HostReadDetector() as detector:
        health.counts.update(features)  # type: ignore[union-attr]
        found, numbers = health._local_numbers(module)  # type: ignore[arg-type]
    assert [r.what for r in detector.reads] == []
    assert len(found) == 3 and numbers.numel() == 3 * (NORM_NUMBERS + HISTOGRAM_BINS + 2 + 3)

"""Table health's batched numbers (``table_numbers``: a kernel group's tables at once) against the per-table
computation they replaced, kept here as the reference: tables of several sizes and dims, two optimizers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels.fbgemm import fbgemm_import_error
from recframe.sparse import KeyedJaggedTensor
from recframe.training import table_health
from recframe.training.table_health import HISTOGRAM_BINS, NORM_NUMBERS, LookupCounts
from recframe.training.table_numbers import adjacent_runs
from recframe.vocab import IdPolicy


def reference_numbers(weight: torch.Tensor, states: list[torch.Tensor], counted: torch.Tensor | None) -> torch.Tensor:
    """The per-table ``_table_numbers`` before batching (commit f1bb306)."""
    norms = weight.float().norm(dim=1).double()
    low, high = norms.min(), norms.max()
    width = (high - low).clamp_min(1e-12) / HISTOGRAM_BINS
    bucket = ((norms - low) / width).long().clamp(0, HISTOGRAM_BINS - 1)
    histogram = torch.bincount(bucket, minlength=HISTOGRAM_BINS).double()
    parts = [torch.stack([norms.sum(), high, torch.tensor(float(norms.numel()), dtype=torch.float64), low,
                          (norms * norms).sum()]), histogram]
    parts += [torch.stack([s.double().mean(), s.double().max()]) for s in states]
    if counted is not None:
        parts.append(counted)
    return torch.cat(parts)


def reference_stats(counts: LookupCounts, table: str) -> torch.Tensor:
    """``LookupCounts.stats_tensor`` before batching."""
    rows = counts.of(table)
    total = rows.sum(dtype=torch.float64)
    top = torch.topk(rows, max(1, rows.numel() // 100)).values.sum(dtype=torch.float64)
    coverage = (rows > 0).sum(dtype=torch.float64) / max(1, rows.numel())
    share = torch.where(total > 0, top / total.clamp_min(1), torch.zeros_like(total))
    return torch.stack([coverage, share, counts.out_of_range[counts._table_index[table]].double()])


def _tables(weight_dtype: str = "fp32") -> list[TableConfig]:
    shapes = [("a", 57, 4), ("b", 300, 4), ("c", 300, 4), ("d", 3, 8), ("e", 1000, 8), ("f", 1, 8), ("g", 140, 4)]
    return [TableConfig(name=n, num_embeddings=r, embedding_dim=d, feature_names=[f"f_{n}"], weight_dtype=weight_dtype,
                        id_policy=IdPolicy.modulo if n in "ce" else IdPolicy.error) for n, r, d in shapes]


def _exactly_or_close(new: list[float], old: list[float], states: int) -> None:
    """Histograms, counts, extremes and lookup stats equal; sums (and states' means) to float64 rounding."""
    summed = {0, 4} | {NORM_NUMBERS + HISTOGRAM_BINS + 2 * j for j in range(states)}
    for i, (a, b) in enumerate(zip(new, old, strict=True)):
        assert a == pytest.approx(b, rel=1e-12) if i in summed else a == b, (i, a, b)


@pytest.mark.parametrize(("optimizer", "weight_dtype", "backend"), [
    ("rowwise_adagrad", "fp32", "torch"), ("adagrad", "fp32", "torch"), ("rowwise_adagrad", "fp16", "torch"),
    pytest.param("rowwise_adagrad", "fp32", "fbgemm", marks=pytest.mark.skipif(
        fbgemm_import_error() is not None, reason="fbgemm_gpu does not import here"))])
def test_batched_numbers_equal_the_per_table_ones(monkeypatch: pytest.MonkeyPatch, optimizer: str,
                                                  weight_dtype: str, backend: str) -> None:
    torch.manual_seed(0)
    tables = _tables(weight_dtype)
    collection = EmbeddingBagCollection(tables, SparseOptimizer(name=optimizer), backend=backend)
    with torch.no_grad():
        for index in range(len(tables)):
            collection._weight(index).mul_(torch.rand(()) * 3)  # tables of different spreads
        for states in collection.optimizer_state_dict().values():
            for state in states.values():
                if state.is_floating_point():
                    state.copy_(torch.rand_like(state))
    monkeypatch.setattr(table_health, "embedding_collections", lambda _: {"ebc": collection})
    health = table_health.TableHealth(every_n_steps=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    health.on_fit_start(None, module)  # type: ignore[arg-type]
    keys = [t.feature_names[0] for t in tables]
    for _ in range(5):  # skewed ids, some outside the modulo tables
        lengths = torch.randint(0, 40, (len(keys) * 4,))
        ids = (torch.rand(int(lengths.sum())) ** 4 * 1200).long()
        ids = torch.where(torch.rand(ids.shape) < 0.02, ids + 5000, ids)
        ids = torch.minimum(ids, torch.tensor([t.num_embeddings - 1 if t.id_policy == IdPolicy.error else 10**6
                                               for t in tables]).repeat_interleave(4).repeat_interleave(lengths))
        health.counts.update(KeyedJaggedTensor.from_lengths(keys, ids, lengths))  # type: ignore[union-attr]
    found, numbers = health._local_numbers(module)  # type: ignore[arg-type]
    weights, states = collection.state_dict(), collection.optimizer_state_dict()
    assert [t.name for t, _, _ in found] == [t.name for t in tables]
    values = numbers.tolist()
    for table, shape, names in found:
        floats = [states[table.name][n] for n in names]
        old = reference_numbers(weights[f"{table.name}.weight"], floats,
                                reference_stats(health.counts, table.name)).tolist()  # type: ignore[arg-type]
        assert tuple(shape) == tuple(weights[f"{table.name}.weight"].shape)
        _exactly_or_close(values[:len(old)], old, len(names))
        values = values[len(old):]
    assert values == []
    assert health.counts.stats_matrix(["a", "g", "c"]).tolist() == [  # type: ignore[union-attr]
        reference_stats(health.counts, n).tolist() for n in "agc"]  # type: ignore[arg-type]


def test_stacked_tables_form_one_run_per_group() -> None:
    """The check that the batched path is what the test above runs: a kernel group's tables are one run."""
    collection = EmbeddingBagCollection(_tables(), SparseOptimizer(), backend="torch")
    weights = collection.state_dict()
    runs = adjacent_runs([(weights[f"{t.name}.weight"],) for t in collection.tables], keys=[0] * 7)
    assert [(a, b) for a, b, _ in runs] == [(0, 3), (3, 6), (6, 7)]  # dim 4: a b c (g after d e f), dim 8: d e f
    assert runs[0][2][0].shape == (657, 4) and runs[0][2][0].data_ptr() == weights["a.weight"].data_ptr()


def test_separate_tensors_are_runs_of_one() -> None:
    single = [(torch.randn(5, 2),), (torch.randn(5, 2),)]
    assert [(a, b) for a, b, _ in adjacent_runs(single, keys=[0, 0])] == [(0, 1), (1, 2)]
    stack = torch.randn(10, 2)
    assert [(a, b) for a, b, _ in adjacent_runs([(stack[:5],), (stack[5:],)], keys=[0, 1])] == [(0, 1), (1, 2)]
    thirds = [(stack[:3],), (stack[3:6],), (stack[6:],)]
    assert [(a, b) for a, b, _ in adjacent_runs(thirds, keys=[0] * 3, max_rows=6)] == [(0, 2), (2, 3)]
    assert [(a, b) for a, b, _ in adjacent_runs(thirds, keys=[0] * 3, max_rows=2)] == [(0, 1), (1, 2), (2, 3)]


@pytest.fixture
def one_rank() -> object:
    """A process group of this process alone (gloo): ``merged_numbers``' collectives leave the numbers as they are."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_merged_numbers_of_one_rank_equal_the_local_ones(monkeypatch: pytest.MonkeyPatch, one_rank: object) -> None:
    """The batched multi-rank path (one rank: whole tables here) gives the batched one-process numbers, tables with
    a state and tables without (sgd) side by side."""
    from recframe.training.table_health_ranks import merged_numbers

    torch.manual_seed(1)
    first = EmbeddingBagCollection(_tables(), SparseOptimizer(name="rowwise_adagrad"), backend="torch")
    second = EmbeddingBagCollection([TableConfig(name=n, num_embeddings=r, embedding_dim=4, feature_names=[f"f_{n}"])
                                     for n, r in (("h", 20), ("i", 7))], SparseOptimizer(name="sgd"), backend="torch")
    with torch.no_grad():
        for states in first.optimizer_state_dict().values():
            states["momentum1"].copy_(torch.rand_like(states["momentum1"]))
    collections = {"first": first, "second": second}
    monkeypatch.setattr(table_health, "embedding_collections", lambda _: collections)
    health = table_health.TableHealth(every_n_steps=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    health.on_fit_start(None, module)  # type: ignore[arg-type]
    keys = [t.feature_names[0] for c in collections.values() for t in c.tables]
    lengths = torch.randint(0, 5, (len(keys) * 3,))
    health.counts.update(KeyedJaggedTensor.from_lengths(  # type: ignore[union-attr]
        keys, torch.randint(0, 3, (int(lengths.sum()),)), lengths))
    found, local = health._local_numbers(module)  # type: ignore[arg-type]
    merged_found, merged = merged_numbers(list(collections.values()), health.counts, 0, torch.device("cpu"),
                                          HISTOGRAM_BINS)
    assert [(t.name, tuple(s), n) for t, s, n in merged_found] == [(t.name, tuple(s), n) for t, s, n in found]
    assert [n for _, _, n in found][-2:] == [[], []] and found[0][2] == ["momentum1"]
    values, other = local.tolist(), merged.tolist()
    assert len(values) == len(other)
    at = 0
    for _, _, names in found:
        size = NORM_NUMBERS + HISTOGRAM_BINS + 2 * len(names) + 3
        _exactly_or_close(other[at:at + size], values[at:at + size], len(names))
        at += size

"""Issue 19, items 2, 3 and 6, unit level: the logging period, the windowed train AUC, the lookup counts of
table health, the reliability diagram; the per-step parts read nothing on the host."""

from __future__ import annotations

import pytest
import torch

from recframe.config.resolve import log_period
from recframe.embedding.config import TableConfig
from recframe.sparse import KeyedJaggedTensor
from recframe.training.curves import reliability_image
from recframe.training.metrics import binary_auc
from recframe.training.table_health import LookupCounts
from recframe.training.train_scalars import WindowAUC
from tests.sync_detector import HostReadDetector


def test_log_period_gives_a_short_run_twenty_points_and_keeps_an_integer() -> None:
    assert [log_period("auto", s) for s in (5, 30, 40, 400, 1000, 10**6, -1)] == [1, 1, 2, 20, 50, 50, 50]
    assert log_period(7, 30) == 7 and log_period("3", 1000) == 3
    for bad in ("0", "often", -2):
        with pytest.raises(ValueError, match="auto or a number of steps"):
            log_period(bad, 100)


def test_window_auc_matches_the_exact_auc_and_restarts() -> None:
    g = torch.Generator().manual_seed(0)
    auc = WindowAUC(tasks=2, bins=1024)
    logits, labels = torch.randn(3000, 2, generator=g), (torch.rand(3000, 2, generator=g) < 0.3).float()
    logits[:, 0] += 1.5 * labels[:, 0]  # task 0 informative, task 1 not
    for part in range(3):  # three steps of one window
        auc.update(logits[part * 1000:(part + 1) * 1000], labels[part * 1000:(part + 1) * 1000])
    got = auc.compute()
    exact = torch.stack([binary_auc(logits[:, t].double(), labels[:, t]) for t in range(2)])
    assert torch.allclose(got, exact.to(got.dtype), atol=2e-3), (got, exact)
    auc.update(logits[:10, :], torch.zeros(10, 2))  # a new window: only negatives, no AUC
    assert torch.isnan(auc.compute()).all()


def test_lookup_counts_count_rows_and_out_of_range_ids() -> None:
    tables = [TableConfig(name="a", num_embeddings=10, embedding_dim=2, feature_names=["f0", "f1"]),
              TableConfig(name="b", num_embeddings=200, embedding_dim=2, feature_names=["f2"], id_policy="modulo")]
    counts = LookupCounts(tables, torch.device("cpu"))
    ids = {"f0": [1, 1, 2], "f1": [9], "f2": [3, 203, -1, 5], "other": [7]}  # 'other': no table
    lengths = {"f0": [2, 1], "f1": [0, 1], "f2": [3, 1], "other": [1, 0]}
    kjt = KeyedJaggedTensor.from_lengths(list(ids), torch.tensor([i for v in ids.values() for i in v]),
                                         torch.tensor([n for v in lengths.values() for n in v]))
    counts.update(kjt)  # the first batch of a layout makes its constants
    with HostReadDetector() as detector:
        counts.update(kjt)
    assert not detector.reads, detector.report()
    expected_a = torch.zeros(10, dtype=torch.int32)
    for i in (1, 1, 2, 9):
        expected_a[i] += 2
    expected_b = torch.zeros(200, dtype=torch.int32)
    for i in (3, 203 % 200, -1 % 200, 5):
        expected_b[i] += 2
    assert torch.equal(counts.of("a"), expected_a) and torch.equal(counts.of("b"), expected_b)
    a, b = counts.stats("a"), counts.stats("b")
    assert a["coverage"] == 0.3 and a["top1pct_share"] == 4 / 8  # the top 1% of 10 rows: 1 row, row 1
    # the top 1% of 200 rows: 2 rows, row 3 (ids 3 and 203) and one of 5 and 199 (-1)
    assert b["coverage"] == 3 / 200 and b["top1pct_share"] == 6 / 8 and b["out_of_range"] == 4  # 203 and -1, twice
    assert a["out_of_range"] == 0


def test_lookup_counts_of_checked_tables_take_the_short_path_and_count_the_same() -> None:
    """Every key's table id_policy=error: rows are start + id (no folding, no out-of-range count), same counts."""
    tables = [TableConfig(name="a", num_embeddings=10, embedding_dim=2, feature_names=["f0", "f1"]),
              TableConfig(name="b", num_embeddings=7, embedding_dim=2, feature_names=["f2"])]
    counts = LookupCounts(tables, torch.device("cpu"))
    ids = {"f0": [1, 1, 2], "f1": [9], "f2": [3, 6, 0, 3]}
    lengths = {"f0": [2, 1], "f1": [0, 1], "f2": [3, 1]}
    kjt = KeyedJaggedTensor.from_lengths(list(ids), torch.tensor([i for v in ids.values() for i in v]),
                                         torch.tensor([n for v in lengths.values() for n in v]))
    counts.update(kjt)
    with HostReadDetector() as detector:
        counts.update(kjt)
    assert not detector.reads, detector.report()
    assert counts._checked[tuple(ids)]
    assert counts.of("a").tolist() == [0, 4, 2, 0, 0, 0, 0, 0, 0, 2]
    assert counts.of("b").tolist() == [2, 0, 0, 4, 0, 0, 2]
    assert counts.counts[-1] == 0 and counts.stats("b")["out_of_range"] == 0


def test_train_auc_update_reads_nothing_on_the_host() -> None:
    auc = WindowAUC(tasks=1)
    auc.update(torch.randn(64), torch.ones(64))
    with HostReadDetector() as detector:
        auc.update(torch.randn(64), (torch.rand(64) < 0.5).float())
        auc.compute()
    assert not detector.reads, detector.report()


def test_reliability_image_draws_each_bins_observed_rate() -> None:
    probs = torch.tensor([0.05] * 10 + [0.95] * 10)
    labels = torch.tensor([0.0] * 10 + [1.0] * 5 + [0.0] * 5)  # bin 0: rate 0; bin 9: rate 0.5
    image = reliability_image(probs, labels, bins=10, size=100)
    blue = (image == [66, 133, 244]).all(axis=2)
    column_9, column_0 = blue[:, 95], blue[:, 5]
    assert not column_0.any() and 45 <= column_9.sum() <= 52


def test_train_auc_keeps_the_logits_without_their_autograd_graph() -> None:
    """Holding the step's autograd graph into the next step broke the CUDA graph capture of the training step (the
    previous step's AccumulateGrad nodes stay alive on the eager stream): TrainAUC keeps detached logits."""
    from types import SimpleNamespace

    from recframe.training.train_scalars import TrainAUC

    model = torch.nn.Linear(3, 1)
    callback = TrainAUC(["click"])
    callback.on_fit_start(SimpleNamespace(), SimpleNamespace(model=model))  # type: ignore[arg-type]
    out = model(torch.randn(4, 3))
    assert callback._logits is not None and callback._logits.grad_fn is None
    assert callback._logits.data_ptr() == out.data_ptr()  # the same storage (a graph's static output stays live)


def _reference_histograms(batches: list[tuple[torch.Tensor, torch.Tensor]], tasks: int,
                          bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window histograms as WindowAUC.update first computed them (an arange and a flatten per step)."""
    pos = torch.zeros(tasks * bins, dtype=torch.float64)
    neg = torch.zeros_like(pos)
    for logits, labels in batches:
        p = torch.sigmoid(logits.float()).reshape(-1, tasks)
        y = labels.to(torch.float64).reshape(-1, tasks)
        index = ((p * bins).long().clamp_(0, bins - 1) + torch.arange(tasks) * bins).flatten()
        pos.index_add_(0, index, y.flatten())
        neg.index_add_(0, index, 1.0 - y.flatten())
    return pos, neg


@pytest.mark.parametrize("tasks", [1, 3])
def test_window_auc_histograms_equal_the_reference_bit_for_bit(tasks: int) -> None:
    g = torch.Generator().manual_seed(1)
    shape = (257,) if tasks == 1 else (257, tasks)
    batches = [(4 * torch.randn(shape, generator=g), (torch.rand(shape, generator=g) < 0.4).float())
               for _ in range(4)]
    auc = WindowAUC(tasks=tasks, bins=64)
    for logits, labels in batches:
        auc.update(logits, labels)
    pos, neg = _reference_histograms(batches, tasks, 64)
    assert torch.equal(auc._pos, pos) and torch.equal(auc._neg, neg)

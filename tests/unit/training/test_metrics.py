"""CTRMetrics, binary_auc and RecallAtK against plain-Python references.

AUC is checked against an O(n^2) count over all positive/negative pairs (ties count half, pairs
weigh w_i * w_j); logloss, NE, calibration and CTR against the textbook formulas written with
`math`; recall@k against a per-query rank count. Data comes from hypothesis with many ties, tiny
and empty sets, one-class sets and zero weights, fed in random chunks. Merging two metrics and a
real 2-process gloo sync must give the whole-data values.
"""

from __future__ import annotations

import math
import warnings
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recframe.training.metrics import CTRMetrics, RecallAtK, binary_auc

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
NAN = float("nan")
KEYS = ["auc", "ne", "logloss", "calibration", "ctr", "num_samples"]
quiet = pytest.mark.filterwarnings("ignore:AUC of:UserWarning", "ignore:The ``compute`` method:UserWarning")


def ref_ctr_metrics(xs: list[float], ys: list[float], ws: list[float]) -> dict[str, float]:
    """The definitions, naively, in Python floats (fine for |logit| <= 10)."""
    total = sum(ws)
    if total == 0:
        return {"auc": NAN, "ne": NAN, "logloss": NAN, "calibration": NAN, "ctr": NAN, "num_samples": 0}
    ps = [1 / (1 + math.exp(-x)) for x in xs]
    losses = [-(y * math.log(p) + (1 - y) * math.log(1 - p)) for p, y in zip(ps, ys, strict=True)]
    logloss = sum(w * loss for loss, w in zip(losses, ws, strict=True)) / total
    ctr = sum(w * y for y, w in zip(ys, ws, strict=True)) / total
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr)) if 0 < ctr < 1 else 0.0
    wins = pos = neg = 0.0
    for x_i, y_i, w_i in zip(xs, ys, ws, strict=True):
        pos, neg = pos + w_i * y_i, neg + w_i * (1 - y_i)
        for x_j, y_j, w_j in zip(xs, ys, ws, strict=True):
            if y_i == 1 and y_j == 0:
                wins += w_i * w_j * (1.0 if x_i > x_j else 0.5 if x_i == x_j else 0.0)
    return {
        "auc": wins / (pos * neg) if pos * neg > 0 else NAN,
        "ne": logloss / entropy if entropy > 0 else NAN,
        "logloss": logloss,
        "calibration": sum(w * p for p, w in zip(ps, ws, strict=True)) / total / ctr if ctr > 0 else NAN,
        "ctr": ctr,
        "num_samples": sum(w != 0 for w in ws),
    }


def assert_matches(out: dict[str, torch.Tensor], ref: dict[str, float], prefix: str = "") -> None:
    assert sorted(key for key in out if key.startswith(prefix)) == sorted(prefix + key for key in KEYS)
    for key, expected in ref.items():
        got = out[prefix + key]
        assert got.dtype == (torch.int64 if key == "num_samples" else torch.float64), key
        if math.isnan(expected):
            assert got.isnan(), (key, got, expected)
        else:
            assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12), key


logits_st = st.one_of(st.sampled_from([-2.0, -0.5, 0.0, 0.5, 3.0]), st.floats(-10, 10, width=32))


@st.composite
def ctr_data(draw, max_size: int = 30):
    """(logits, labels, weights or None, chunk sizes), float32-exact; ties from a small value set."""
    n = draw(st.integers(0, max_size))
    xs = draw(st.lists(logits_st, min_size=n, max_size=n))
    ys = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    ws = draw(st.none() | st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    return xs, ys, ws, [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


def feed(metric: CTRMetrics, xs, ys, ws, chunks: list[int]) -> None:
    x, y = torch.tensor(xs, dtype=torch.float32), torch.tensor(ys)
    w = [None] * len(chunks) if ws is None else torch.tensor(ws).split(chunks)
    for part in zip(x.split(chunks), y.split(chunks), w, strict=True):
        metric.update(*part)


@quiet
@SETTINGS
@given(data=ctr_data())
def test_ctr_metrics_match_python_reference(data) -> None:
    xs, ys, ws, chunks = data
    metric = CTRMetrics()
    feed(metric, xs, ys, ws, chunks)
    assert_matches(metric.compute(), ref_ctr_metrics(xs, ys, [1.0] * len(xs) if ws is None else ws))


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1], 0.875),  # one tied pair counts half
        ([1.0, 1.0], [1, 0], 0.5),
        ([40.0, 50.0], [0, 1], 1.0),  # sigmoid would tie these in float32; logits do not
        ([3.0], [1], NAN),
        ([], [], NAN),
    ],
)
def test_binary_auc_known_values(scores, labels, expected) -> None:
    auc = binary_auc(torch.tensor(scores), torch.tensor(labels, dtype=torch.float32))
    assert auc.isnan() if math.isnan(expected) else auc.item() == expected


def test_logloss_is_stable_for_extreme_logits() -> None:
    metric = CTRMetrics()
    metric.update(torch.tensor([100.0, -100.0, 100.0, -100.0]), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    out = metric.compute()
    assert out["logloss"].item() == pytest.approx(50.0, rel=1e-12)  # two samples at 100 nats, two at ~0
    assert out["calibration"].item() == pytest.approx(1.0) and out["auc"].item() == 0.5


def test_undefined_auc_warns_once_and_ne_is_nan() -> None:
    metric = CTRMetrics()
    metric.update(torch.tensor([0.3, -1.0]), torch.tensor([1.0, 1.0]))
    with pytest.warns(UserWarning, match="AUC of the task is undefined"):
        out = metric.compute()
    assert out["auc"].isnan() and out["ne"].isnan() and out["ctr"].item() == 1.0
    assert out["calibration"].item() == pytest.approx((1 / (1 + math.exp(-0.3)) + 1 / (1 + math.exp(1.0))) / 2)
    metric.update(torch.tensor([0.5]), torch.tensor([1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metric.compute()["auc"].isnan()


@quiet
def test_empty_gives_nan_and_zero_samples() -> None:
    assert_matches(CTRMetrics().compute(), ref_ctr_metrics([], [], []))
    assert_matches(CTRMetrics(task_names=["a", "b"]).compute(), ref_ctr_metrics([], [], []), prefix="b/")


@quiet
@settings(SETTINGS, max_examples=30)
@given(data=ctr_data(), per_task_weights=st.booleans())
def test_multi_task_matches_one_metric_per_column(data, per_task_weights: bool) -> None:
    xs, ys, ws, _ = data
    x = torch.tensor(xs, dtype=torch.float32)
    logits, labels = torch.stack([x, -x.flip(0)], 1), torch.stack([torch.tensor(ys), torch.tensor(ys).flip(0)], 1)
    weights = None if ws is None else torch.tensor(ws)
    if weights is not None and per_task_weights:
        weights = torch.stack([weights, weights.flip(0)], 1)
    metric = CTRMetrics(task_names=["click", "purchase"])
    metric.update(logits, labels, weights)
    out = metric.compute()
    assert list(out) == [f"{name}/{key}" for name in ("click", "purchase") for key in KEYS]
    for column, name in enumerate(["click", "purchase"]):
        w = None if weights is None else (weights[:, column] if weights.dim() == 2 else weights)
        single = CTRMetrics()
        single.update(logits[:, column], labels[:, column], w)
        w_list = [1.0] * len(xs) if w is None else w.tolist()
        assert_matches(out, ref_ctr_metrics(logits[:, column].tolist(), labels[:, column].tolist(), w_list), f"{name}/")
        for key, value in single.compute().items():
            torch.testing.assert_close(out[f"{name}/{key}"], value, equal_nan=True)


def test_works_with_torchmetrics_without_metric_dtype(monkeypatch) -> None:
    """torchmetrics before 1.1 (TorchRec pins 1.0.3; pytorch-lightning allows it) has no ``Metric.dtype``."""
    from torchmetrics import Metric

    monkeypatch.delattr(Metric, "dtype", raising=False)
    metric = CTRMetrics()
    metric.update(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0]))
    out = metric.compute()
    assert out["num_samples"].item() == 3
    assert out["auc"].item() == 1.0


def test_rejects_bad_shapes_and_task_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        CTRMetrics(task_names=["a", "a"])
    with pytest.raises(ValueError, match=r"\[batch\]"):
        CTRMetrics().update(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\[batch, 2\]"):
        CTRMetrics(task_names=["a", "b"]).update(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="labels"):
        CTRMetrics().update(torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        CTRMetrics().update(torch.zeros(4), torch.zeros(4), torch.ones(3))
    with pytest.raises(ValueError, match="ks"):
        RecallAtK(ks=(0, 5))
    with pytest.raises(ValueError, match="target_index"):
        RecallAtK().update(torch.zeros(3, 5), torch.zeros(2, dtype=torch.long))


def ref_recall(scores: list[list[float]], targets: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    ranks = [sum(s > row[t] for s in row) for row, t in zip(scores, targets, strict=True)]
    return {f"recall@{k}": sum(r < k for r in ranks) / len(ranks) if ranks else NAN for k in ks}


@st.composite
def retrieval_data(draw):
    rows, cols = draw(st.integers(0, 12)), draw(st.integers(1, 12))
    row = st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), min_size=cols, max_size=cols)  # many ties
    scores = draw(st.lists(row, min_size=rows, max_size=rows))
    targets = draw(st.lists(st.integers(0, cols - 1), min_size=rows, max_size=rows))
    return scores, targets, cols


@quiet
@SETTINGS
@given(data=retrieval_data(), split=st.integers(0, 12))
def test_recall_at_k_matches_python_reference(data, split: int) -> None:
    scores, targets, cols = data
    ks = (1, 3, 10, 50)  # 10 and 50 often exceed the number of candidates: every target counts
    metric = RecallAtK(ks=ks)
    for part in (slice(0, split), slice(split, None)):
        metric.update(torch.tensor(scores).reshape(-1, cols)[part], torch.tensor(targets, dtype=torch.long)[part])
    out = metric.compute()
    for key, expected in ref_recall(scores, targets, ks).items():
        assert out[key].isnan() if math.isnan(expected) else out[key].item() == pytest.approx(expected), key


def make_data(seed: int, n: int, tasks: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(-4, 5, (n, tasks), generator=gen).float() / 2  # many ties
    return logits, (torch.rand(n, tasks, generator=gen) < 0.3).float(), torch.rand(n, generator=gen)


def test_merge_state_of_halves_equals_whole() -> None:
    logits, labels, weights = make_data(0, 301)
    whole, first, second = (CTRMetrics(task_names=["click", "purchase"]) for _ in range(3))
    whole.update(logits, labels, weights)
    first.update(logits[:120], labels[:120], weights[:120])
    second.update(logits[120:], labels[120:], weights[120:])
    first.merge_state(second)
    torch.testing.assert_close(first.compute(), whole.compute(), rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    scores, targets = torch.randint(0, 4, (50, 20), generator=gen).float(), torch.randint(0, 20, (50,), generator=gen)
    whole_recall, recall_a, recall_b = RecallAtK(ks=(1, 5)), RecallAtK(ks=(1, 5)), RecallAtK(ks=(1, 5))
    whole_recall.update(scores, targets)
    recall_a.update(scores[:10], targets[:10])
    recall_b.update(scores[10:], targets[10:])
    recall_a.merge_state(recall_b)
    torch.testing.assert_close(recall_a.compute(), whole_recall.compute(), rtol=0, atol=0)


def _distributed_worker(rank: int, init_file: str, expected: dict[str, dict[str, torch.Tensor]]) -> None:
    store = f"file://{init_file}"  # a file store needs no free port
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        logits, labels, weights = make_data(1, 257)
        metric, lopsided = CTRMetrics(task_names=["click", "purchase"]), CTRMetrics(task_names=["click", "purchase"])
        shard = slice(0, 100) if rank == 0 else slice(100, None)  # uneven shards
        metric.update(logits[shard][:40], labels[shard][:40], weights[shard][:40])
        metric.update(logits[shard][40:], labels[shard][40:], weights[shard][40:])
        if rank == 0:  # rank 1 sees no data at all
            lopsided.update(logits, labels, weights)
        recall = RecallAtK(ks=(1, 5, 50))
        scores, targets = torch.randn(2, 30, 20, generator=torch.Generator().manual_seed(2)), torch.arange(30) % 20
        recall.update(scores[rank], targets)
        for name, value in (("ctr", metric.compute()), ("lopsided", lopsided.compute()), ("recall", recall.compute())):
            torch.testing.assert_close(value, expected[name], rtol=1e-12, atol=1e-12, msg=f"{name} on rank {rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_gloo_sync_equals_whole_data(tmp_path) -> None:
    logits, labels, weights = make_data(1, 257)
    whole = CTRMetrics(task_names=["click", "purchase"])
    whole.update(logits, labels, weights)
    scores = torch.randn(2, 30, 20, generator=torch.Generator().manual_seed(2))
    recall = RecallAtK(ks=(1, 5, 50))
    recall.update(scores.reshape(60, 20), torch.arange(60) % 30 % 20)
    expected = {"ctr": whole.compute(), "lopsided": whole.compute(), "recall": recall.compute()}
    mp.spawn(_distributed_worker, args=(str(tmp_path / "store"), expected), nprocs=2, join=True)

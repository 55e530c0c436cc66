"""Finite data in epochs: categorical ids, epoch plans over ranks, resume positions, the TSV source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from recframe.data.arrays import Columns, ColumnsReader, EpochBatches, EpochLoader, EpochPlan, ValBatches, make_batch
from recframe.data.categorical import MISSING_ID, OOV_ID, Vocabulary, merge_counts, modulo_ids
from recframe.data.sources import CriteoTsvSource, split_rows

KEYS = [f"cat_{i}" for i in range(26)]


def test_modulo_ids_reserve_row_zero_for_missing() -> None:
    values = np.array([0, 5, 6, 2**64 - 1, 9], dtype=np.uint64)
    missing = np.array([False, False, False, False, True])
    ids = modulo_ids(values, missing, rows=6)
    assert ids.tolist() == [1, 1, 2, 1 + (2**64 - 1) % 5, MISSING_ID]
    with pytest.raises(ValueError, match="at least 2 rows"):
        modulo_ids(values, missing, rows=1)


def test_vocabulary_orders_by_count_and_sends_rare_values_to_oov() -> None:
    values = np.array([5, 5, 5, 9, 9, 1, 1, 7], dtype=np.uint64)
    vocab = Vocabulary.build(values, threshold=2)
    assert vocab.num_rows == 2 + 3 and vocab.distinct == 4
    query = np.array([5, 9, 1, 7, 100, 5], dtype=np.uint64)
    missing = np.array([False] * 5 + [True])
    assert vocab.lookup(query, missing).tolist() == [2, 4, 3, OOV_ID, OOV_ID, MISSING_ID]  # 9 and 1 tie: 1 first
    small = Vocabulary.build(values, threshold=1, capacity=4)  # room for the 2 most frequent only
    assert small.lookup(query, missing).tolist() == [2, OOV_ID, 3, OOV_ID, OOV_ID, MISSING_ID]
    assert small.truncated == 2
    uniq, counts = merge_counts([(np.array([1, 5], np.uint64), np.array([2, 1])),
                                 (np.array([5, 7], np.uint64), np.array([2, 1]))])
    assert uniq.tolist() == [1, 5, 7] and counts.tolist() == [2, 3, 1]


def columns(n: int) -> Columns:
    return Columns(dense=np.arange(n, dtype=np.float32)[:, None].repeat(2, 1), ids=np.arange(n)[:, None] % 7,
                   labels=(np.arange(n) % 2).astype(np.float32))


def test_epoch_plan_covers_each_row_once_per_epoch_and_splits_ranks() -> None:
    world = [EpochPlan(num_rows=50, batch_size=4, world_size=3, rank=r, shuffle=True, seed=1) for r in range(3)]
    one = EpochPlan(num_rows=50, batch_size=12, world_size=1, rank=0, shuffle=True, seed=1)
    assert world[0].batches_per_epoch == one.batches_per_epoch == 4  # 50 // 12: 2 rows dropped
    for epoch in range(2):
        seen = np.concatenate([p.rows(epoch, k) for k in range(4) for p in world])
        assert len(set(seen.tolist())) == 48
        for k in range(4):  # the global batch does not depend on how it is split over ranks
            assert sorted(np.concatenate([p.rows(epoch, k) for p in world]).tolist()) == one.rows(epoch, k).tolist()
    assert one.rows(0, 0).tolist() != one.rows(1, 0).tolist()
    assert EpochPlan(50, 12, 1, 0, shuffle=False, seed=1).rows(3, 1).tolist() == list(range(12, 24))


def test_batch_layout() -> None:
    batch = make_batch(columns(10), np.array([1, 4, 8]), keys=["a"])
    assert batch.sparse_features.keys() == ["a"] and batch.sparse_features.values().tolist() == [1, 4, 1]
    assert batch.sparse_features.lengths().tolist() == [1, 1, 1]
    assert batch.dense_features[:, 0].tolist() == [1.0, 4.0, 8.0] and batch.labels.tolist() == [1.0, 0.0, 0.0]


def test_bags_padded_with_minus_one_become_jagged() -> None:
    ids = np.array([[[3, -1], [5, 6]], [[4, -1], [-1, -1]], [[2, -1], [7, -1]]])  # 3 rows, 2 features, bags <= 2
    cols = Columns(dense=np.zeros((3, 1), np.float32), ids=ids, labels=np.zeros(3, np.float32))
    kjt = make_batch(cols, np.array([0, 1, 2]), keys=["single", "bag"]).sparse_features
    assert kjt.lengths().tolist() == [1, 1, 1, 2, 0, 1]
    assert kjt.values().tolist() == [3, 4, 2, 5, 6, 7]


def labels_of(loader: DataLoader, passes: int) -> list[list[float]]:
    return [[b.dense_features[0, 0].item() for b in loader] for _ in range(passes)]


def test_batch_shuffle_permutes_contiguous_batches_the_same_on_every_rank() -> None:
    world = [EpochPlan(50, 4, 3, r, shuffle=True, seed=1, by_batch=True) for r in range(3)]
    one = EpochPlan(50, 12, 1, 0, shuffle=True, seed=1, by_batch=True)
    for epoch in range(2):
        order = one.order(epoch)
        assert sorted(order.tolist()) == [0, 1, 2, 3]
        for k in range(4):
            parts = [p.select(epoch, k, p.order(epoch)) for p in world]
            assert all(isinstance(part, slice) for part in parts)
            assert [(s.start, s.stop) for s in parts] == [(12 * order[k] + 4 * r, 12 * order[k] + 4 * r + 4)
                                                          for r in range(3)]
            assert one.select(epoch, k, order) == slice(12 * order[k], 12 * order[k] + 12)
    assert one.order(0).tolist() != one.order(1).tolist()
    assert EpochPlan(50, 12, 1, 0, shuffle=False, seed=1).select(3, 1, None) == slice(12, 24)


def test_slices_and_indices_make_the_same_batch() -> None:
    data = columns(10)
    by_slice, by_index = make_batch(data, slice(2, 6), ["a"]), make_batch(data, np.arange(2, 6), ["a"])
    for a, b in ((by_slice.dense_features, by_index.dense_features), (by_slice.labels, by_index.labels),
                 (by_slice.sparse_features.values(), by_index.sparse_features.values())):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("num_workers", "by_batch"), [(0, False), (2, False), (0, True), (2, True)])
def test_epochs_and_resume_positions(num_workers: int, by_batch: bool) -> None:
    data = columns(40)
    plan = EpochPlan(num_rows=40, batch_size=4, world_size=1, rank=0, shuffle=True, seed=3, by_batch=by_batch)
    read = ColumnsReader(data, ["a"])
    straight = labels_of(EpochLoader(EpochBatches(read, plan), batch_size=None, num_workers=num_workers), 3)
    flat = [x for epoch in straight for x in epoch]
    assert [len(e) for e in straight] == [10, 10, 10] and straight[0] != straight[1]
    for consumed in (0, 7, 10, 23):  # resume mid-epoch and at an epoch boundary
        loader = EpochLoader(EpochBatches(read, plan, first_batch=consumed), batch_size=None,
                             num_workers=num_workers)
        resumed = [x for epoch in labels_of(loader, 3 - consumed // 10) for x in epoch]
        assert resumed == flat[consumed:]


def test_validation_parts_are_equal_per_rank() -> None:
    data = columns(23)
    parts = [list(ValBatches(ColumnsReader(data, ["a"]), first_row=3, num_rows=20, batch_size=3, world_size=3, rank=r))
             for r in range(3)]
    assert [[b.batch_size for b in p] for p in parts] == [[3, 3]] * 3  # 20 // 3 = 6 rows each, 2 dropped
    rows = [b.dense_features[:, 0].tolist() for p in parts for b in p]
    assert rows[0] == [3.0, 4.0, 5.0] and rows[-1] == [18.0, 19.0, 20.0]


def write_tsv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        cats = [f"{v:08x}" if v % 5 else "" for v in rng.integers(0, 30, 26)]
        lines.append("\t".join([str(rng.integers(0, 2)), *map(str, rng.integers(-1, 50, 13)), *cats]))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mapping", ["modulo", "vocab"])
def test_tsv_source_splits_by_file_order_and_maps_ids(mapping: str, tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    write_tsv(path, 103)
    with path.open("a") as f:
        f.write("1\t2\tnot a row\n")
    source = CriteoTsvSource(str(path), KEYS, [8] * 26, batch_size=10, val_fraction=0.2, id_mapping=mapping,
                             vocab_threshold=2)
    source.setup()
    assert split_rows(103, 0.2) == 82
    report = source.report()
    assert report["data/rows_train"] == 82 and report["data/rows_val"] == 21
    assert report["data/skipped_short_row"] == 1 and report["data/skipped_lines"] == 1
    train = list(source.train_dataset(rank=0, world_size=1, first_batch=0))
    val = list(source.val_dataset(rank=0, world_size=1))
    assert len(train) == 8 and [b.batch_size for b in val] == [10, 10, 1]
    ids = torch.cat([b.sparse_features.values() for b in train + val])
    assert int(ids.min()) >= 0 and int(ids.max()) < 8
    assert (ids == 0).any()  # missing values (every 5th) -> row 0
    assert "1 malformed line (short_row=1)" in source.summary() and f"{path}:104" in source.summary()

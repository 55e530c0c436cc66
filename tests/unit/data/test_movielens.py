"""MovieLens 100K as a click task: the published counts, multi-hot genres, splits and bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from recframe.data.movielens import DENSE_FEATURES, SPARSE_FEATURES, MovieLensSource
from recframe.data.report import DataError
from tests.shared_data import MOVIELENS_100K, require

ROWS = {name: 2000 for name in SPARSE_FEATURES}


def source(path: Path, **kwargs: object) -> MovieLensSource:
    options = {"dense_names": list(DENSE_FEATURES), "sparse_names": list(SPARSE_FEATURES), "table_rows": ROWS,
               "batch_size": 1000, **kwargs}
    made = MovieLensSource(str(path), **options)  # type: ignore[arg-type]
    made.setup()
    return made


def test_u1_split_labels_and_features() -> None:
    ml = source(require(MOVIELENS_100K))
    report = ml.report()
    assert report["data/rows_train"] == 80_000 and report["data/rows_val"] == 20_000
    labels = ml.columns.labels
    assert int(labels.sum()) == 34_174 + 21_201  # SOURCE.md: ratings 4 and 5
    assert ml.vocab_rows["user_gender"] == 2 + 2 and ml.vocab_rows["user_occupation"] == 2 + 21
    assert ml.vocab_rows["item_genres"] == 2 + 19
    batch = next(iter(ml.val_dataset(rank=0, world_size=1)))
    genres = batch.sparse_features["item_genres"].lengths()
    assert int(genres.min()) >= 1 and int(genres.max()) <= 6
    assert (batch.sparse_features["user_id"].lengths() == 1).all()
    ages = batch.dense_features[:, 0]
    assert float(ages.min()) >= 0.07 and float(ages.max()) <= 0.73  # ages 7..73, scaled by 1/100


def test_time_split_and_feature_subset() -> None:
    ml = MovieLensSource(str(require(MOVIELENS_100K)), dense_names=["user_age"], sparse_names=["item_id", "user_id"],
                         table_rows=ROWS, batch_size=500, split="time", val_fraction=0.1)
    ml.setup()
    assert ml.num_train == 90_000 and ml.columns.ids.shape == (100_000, 2)
    batch = next(iter(ml.train_dataset(rank=0, world_size=1, first_batch=0)))
    assert batch.sparse_features.keys() == ["item_id", "user_id"] and batch.dense_features.shape == (500, 1)
    ids = ml.columns.ids[ml.num_train:, 0]
    assert (ids == 1).any()  # items first rated in the last 10% of time are out of vocabulary


def test_a_damaged_file_names_its_line(tmp_path: Path) -> None:
    copy = tmp_path / "ml"
    shutil.copytree(require(MOVIELENS_100K), copy)
    lines = (copy / "u1.base").read_text().splitlines()
    lines[41] = "1\tx\t5\t874965758"
    (copy / "u1.base").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u1.base:42: field item: 'x' is not an integer"):
        source(copy)
    with pytest.raises(DataError, match="split u3 needs u3.base and u3.test"):
        source(copy, split="u3")
    np.testing.assert_array_equal(source(copy, split="time").columns.labels.shape, (100_000,))


def test_config_feature_names_match_the_reader() -> None:
    from recframe.data.checks import data_source_problems
    from recframe.training.checks import compose_config

    cfg = compose_config(["+experiment=movielens", f"data.path={require(MOVIELENS_100K)}",
                          "features.sparse=[user_id,item_genre]", "features.dense=[user_age,item_release_year]"])
    problems = data_source_problems(cfg)
    assert [p.key for p in problems][:1] == ["features.sparse"] and "item_genre" in problems[0].message
    known = problems[0].hint
    assert all(name in known for name in SPARSE_FEATURES)

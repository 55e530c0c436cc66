"""MovieLens retrieval samples: histories equal a plain-Python reference, each user's last item validates,
item_id and user_history share one item vocabulary, and the experiment builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recframe.data.movielens_retrieval import ITEM_FEATURES, USER_FEATURES, MovieLensRetrievalSource, histories
from recframe.data.report import DataError
from tests.shared_data import MOVIELENS_100K, MOVIELENS_LATEST_SMALL, require
from tests.unit.data.test_movielens_layouts import write_1m

ROWS = {name: 1000 for name in USER_FEATURES + ITEM_FEATURES}


@pytest.mark.parametrize("seed", range(5))
def test_histories_equal_a_plain_python_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    user = np.sort(rng.integers(0, 6, size=40))
    item = rng.integers(0, 100, size=40)
    at = rng.choice(40, size=15, replace=False)
    length = int(rng.integers(1, 6))
    expected = []
    for t in at:
        before = [int(item[k]) for k in range(t) if user[k] == user[t]][-length:]
        expected.append([-1] * (length - len(before)) + before)
    assert histories(user, item, at, length).tolist() == expected


def test_last_item_of_each_user_validates_with_its_history(tmp_path: Path) -> None:
    ml1m = write_1m(tmp_path / "ml-1m")
    keys = ["user_id", "user_history", "user_gender", "item_id", "item_genres"]
    source = MovieLensRetrievalSource(str(ml1m), keys, ROWS, batch_size=2, history_length=2, shuffle=False)
    source.setup()
    # by user and time: user 1: 4, 1, 2 | user 2: 1, 2, 3 | user 3: 4, 2. Training interactions (all but each
    # user's last): 4, 1, 1, 2, 4: vocabulary rows by count, ties by value: item 1 -> 2, 4 -> 3, 2 -> 4
    assert source.num_train == 2 and len(source.columns) == 5  # trains on (1: 1), (2: 2); validates 3 users
    ids = source.columns.ids
    assert ids[:, keys.index("item_id"), 0].tolist() == [2, 4, 4, 1, 4]  # item 3 is never in training: OOV
    assert ids[:, keys.index("user_history"), :2].tolist() == [[-1, 3], [-1, 2], [3, 2], [2, 4], [-1, 3]]
    assert (ids[:, keys.index("user_history"), 2:] == -1).all()  # bags are padded to the widest (genres: 3)
    assert source.columns.labels.tolist() == [1.0] * 5 and source.columns.dense.shape == (5, 0)
    assert source.report() == {"data/rows_train": 2, "data/rows_val": 3, "data/single_rating_users": 0}


def test_movielens_100k_holds_out_one_item_per_user() -> None:
    source = MovieLensRetrievalSource(str(require(MOVIELENS_100K)), ["user_id", "user_history", "item_id"], ROWS,
                                      batch_size=256)
    source.setup()
    assert source.report() == {"data/rows_train": 100_000 - 2 * 943, "data/rows_val": 943,
                               "data/single_rating_users": 0}
    batch = next(iter(source.val_dataset(rank=0, world_size=1)))
    lengths = batch.sparse_features["user_history"].lengths()
    assert int(lengths.min()) == 19 and int(lengths.max()) == 20  # every user has 20 ratings or more
    with pytest.raises(DataError, match="no user attributes"):
        MovieLensRetrievalSource(str(require(MOVIELENS_LATEST_SMALL)), ["user_id", "user_zip"], ROWS,
                                 batch_size=2).setup()


def test_two_tower_experiment_builds_on_movielens() -> None:
    from recframe.training.builders import build_datamodule, build_model
    from recframe.training.checks import compose_config, find_problems

    args = ["+experiment=movielens_two_tower", f"data.path={require(MOVIELENS_100K)}"]
    assert find_problems(args) == []
    cfg = compose_config(args)
    model, data = build_model(cfg), build_datamodule(cfg)
    batch = next(iter(data.val_dataloader()))
    assert model(batch).shape == (256, 256)
    problems = find_problems(["+experiment=movielens", "data=movielens_retrieval", args[1]])
    assert any(p.key == "data" and "data=movielens_retrieval is for ['two_tower']" in p.message for p in problems)


def test_latest_layout_two_tower_config_is_refused_then_fixed_as_the_hint_says() -> None:
    from recframe.training.checks import find_problems

    args = ["+experiment=movielens_two_tower", f"data.path={require(MOVIELENS_LATEST_SMALL)}"]
    problems = find_problems(args)
    assert [p.key for p in problems] == ["features"] and "no user attributes" in problems[0].message
    fix = problems[0].hint.removeprefix("use ").split(" ")
    assert fix == ["features=movielens_latest_retrieval", "tables=movielens_latest_retrieval",
                   "'model.user_features=[user_id,user_history]'"]
    assert find_problems([*args, *fix[:2], fix[2].strip("'")]) == []

"""MovieLens 1M (official ``::`` files, written here), latest-small and the joined DeepCTR sample: layouts
detected, the published counts, the same columns from the 1M files and from their joined CSV, features a
layout lacks refused with the fix."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from recframe.data.movielens import SPARSE_FEATURES, MovieLensSource
from recframe.data.movielens_files import JOINED_HEADER, detect_layout, read_movielens
from recframe.data.report import DataError
from tests.shared_data import MOVIELENS_1M_SAMPLE, MOVIELENS_LATEST_SMALL, require

ROWS = {name: 20000 for name in SPARSE_FEATURES}
USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072"), (3, "M", 25, 15, "55117-1234")]
MOVIES = [(1, "Toy Story (1995)", "Animation|Children's|Comedy"), (2, "Jumanji (1995)", "Adventure|Children's"),
          (3, "Pokémon: The Movie (1999)", "Animation"), (4, "Untitled", "Drama")]
RATINGS = [(1, 1, 5, 978300760), (1, 2, 3, 978302109), (2, 3, 4, 978301968), (2, 1, 2, 978300275),
           (3, 4, 1, 978824291), (3, 2, 4, 978824292), (1, 4, 4, 978300100), (2, 2, 5, 978301000)]


def write_1m(directory: Path) -> Path:
    """A tiny ml-1m directory in the official layout (``::``-separated, latin-1)."""
    directory.mkdir()
    for name, rows in (("users.dat", USERS), ("movies.dat", MOVIES), ("ratings.dat", RATINGS)):
        text = "".join("::".join(str(v) for v in row) + "\n" for row in rows)
        (directory / name).write_text(text, encoding="latin-1")
    return directory


def write_joined(path: Path) -> Path:
    """The same ratings joined with their user and movie, as DeepCTR writes ML-1M."""
    users, movies = {u[0]: u for u in USERS}, {m[0]: m for m in MOVIES}
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(JOINED_HEADER)
        for user, item, rating, time in RATINGS:
            _, gender, age, occupation, zip_code = users[user]
            out.writerow([user, item, rating, time, movies[item][1], movies[item][2], gender, age, occupation,
                          zip_code])
    return path


def test_official_1m_files_and_their_joined_csv_give_the_same_columns(tmp_path: Path) -> None:
    ml1m, joined = write_1m(tmp_path / "ml-1m"), write_joined(tmp_path / "joined.csv")
    assert detect_layout(ml1m) == "1m" and detect_layout(joined) == "joined"
    data = read_movielens(ml1m)
    assert data.year[1:5].tolist() == [1995, 1995, 1999, -1]
    assert (data.genres[1] >= 0).sum() == 3 and (data.genres[4] >= 0).sum() == 1
    sources = [MovieLensSource(str(p), ["user_age", "item_release_year"], list(SPARSE_FEATURES), ROWS, batch_size=2,
                               split="time", val_fraction=0.25) for p in (ml1m, joined)]
    for source in sources:
        source.setup()
    a, b = (s.columns for s in sources)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.labels, b.labels)
    # (user, item, rating) by time: (1,4,4) (2,1,2) (1,1,5) (2,2,5) (2,3,4) (1,2,3) | (3,4,1) (3,2,4)
    assert a.labels.tolist() == [1, 0, 1, 1, 1, 0, 0, 1]
    assert sources[0].num_train == 6 and sources[0].vocab_rows["user_age_bucket"] == 2 + 2  # codes 1 and 56 train
    age_bucket = a.ids[:, SPARSE_FEATURES.index("user_age_bucket"), 0]
    assert age_bucket[0] != age_bucket[1] and age_bucket[-1] == 1  # user 3 (age code 25) only validates: OOV
    assert a.dense[:2, 0].tolist() == pytest.approx([0.01, 0.56])  # age codes / 100
    with pytest.raises(DataError, match=r"split u1 needs u1.base and u1.test .*use data.split=time"):
        MovieLensSource(str(ml1m), [], ["user_id"], ROWS, batch_size=2, split="u1").setup()


def test_a_damaged_1m_file_names_its_line(tmp_path: Path) -> None:
    ml1m = write_1m(tmp_path / "ml-1m")
    (ml1m / "ratings.dat").write_text("1::1::5::978300760\n1::x::3::978302109\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"ratings.dat:2: field item: 'x' is not an integer"):
        read_movielens(ml1m)
    (ml1m / "ratings.dat").write_text("1::1::5\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"ratings.dat:1: 3 '::'-separated fields, expected 4"):
        read_movielens(ml1m)
    with pytest.raises(DataError, match="no MovieLens files"):
        detect_layout(tmp_path)


def test_no_genres_at_all_reads_and_a_rating_of_an_unknown_movie_names_the_movie_file(tmp_path: Path) -> None:
    ml1m = write_1m(tmp_path / "ml-1m")
    (ml1m / "movies.dat").write_text("".join(f"{m}::{title}::(no genres listed)\n" for m, title, _ in MOVIES),
                                     encoding="latin-1")
    source = MovieLensSource(str(ml1m), [], ["user_id", "item_genres"], ROWS, batch_size=2, split="time")
    source.setup()
    assert source.columns.ids.shape == (len(RATINGS), 2, 1)
    assert source.columns.ids[:, 1, 0].tolist() == [-1] * len(RATINGS)  # empty bags, as a genre-less item gets
    (ml1m / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n4::Untitled::Drama\n", encoding="latin-1")
    with pytest.raises(DataError, match=rf"names item 2, absent from the movie file {ml1m / 'movies.dat'}: add"):
        read_movielens(ml1m)  # ids 2 and 3 are below the largest movie id, 4, but not in the file


def test_latest_small_counts_half_stars_and_no_user_attributes() -> None:
    path = require(MOVIELENS_LATEST_SMALL)
    data = read_movielens(path)
    assert data.layout == "latest" and not data.has_user_attributes
    assert len(data.ratings) == 100_836 and np.unique(data.ratings.user).size == 610  # SOURCE.md
    assert np.unique(data.ratings.item).size == 9_724
    source = MovieLensSource(str(path), ["item_release_year"], ["user_id", "item_id", "item_genres", "item_year"],
                             ROWS, batch_size=512, split="time", val_fraction=0.1)
    source.setup()
    assert int(source.columns.labels.sum()) == 26_818 + 8_551 + 13_211  # ratings 4.0, 4.5 and 5.0
    assert source.vocab_rows["item_genres"] == 2 + 19  # 20 genres, "(no genres listed)" is none
    with pytest.raises(DataError, match=r"latest layout has no user attributes, so no features \['user_gender'\]"):
        MovieLensSource(str(path), [], ["user_id", "user_gender"], ROWS, batch_size=2, split="time").setup()


def test_joined_deepctr_sample() -> None:
    path = require(MOVIELENS_1M_SAMPLE)
    source = MovieLensSource(str(path), [], ["user_id", "item_genres", "user_gender"], ROWS, batch_size=20,
                             split="time", val_fraction=0.1, shuffle=False)
    source.setup()
    assert len(source.columns) == 200 and int(source.columns.labels.sum()) == 65 + 48  # SOURCE.md: 4s and 5s
    with path.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: (int(r["timestamp"]), int(r["user_id"]), int(r["movie_id"])))
    lengths = (source.columns.ids[:, 1] >= 0).sum(axis=1)
    assert lengths.tolist() == [len(r["genres"].split("|")) for r in rows]


def test_config_names_what_a_layout_lacks() -> None:
    from recframe.training.checks import find_problems

    path = require(MOVIELENS_LATEST_SMALL)
    problems = find_problems(["+experiment=movielens", f"data.path={path}"])
    assert {p.key for p in problems} == {"features", "data.split"}
    features = next(p for p in problems if p.key == "features")
    assert "no user attributes" in features.message and "features=movielens_latest" in features.hint
    fixed = ["+experiment=movielens", f"data.path={path}", "features=movielens_latest", "tables=movielens_latest",
             "data.split=time"]
    assert find_problems(fixed) == []

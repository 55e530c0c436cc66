"""MovieLens 100K (GroupLens ``ml-100k`` layout) as a click task: data kind ``movielens``.

Files read from the directory: ``u.data`` (``user \\t item \\t rating \\t timestamp``), ``u.user``
(``id|age|gender|occupation|zip``), ``u.item`` (``id|title|release date|video date|URL|`` 19 genre
flags, latin-1) and, for a GroupLens split, ``<split>.base`` / ``<split>.test``.

The label is ``rating >= positive_rating`` (4: 55% positives). Features, by fixed name (a config
picks any of them, in any order):

- dense: ``user_age`` (age / 100), ``item_release_year`` ((year - 1900) / 100; 0 if unknown).
- sparse: ``user_id``, ``item_id``, ``user_age_bucket`` (<18, 18-24, 25-34, 35-44, 45-49, 50-55,
  56+), ``user_gender``, ``user_occupation``, ``user_zip`` (the first ``zip_prefix`` characters),
  ``item_genres`` (multi-hot: 1 to 6 genres), ``item_year`` (release year).

Ids come from a vocabulary counted on the training ratings (``recframe.data.categorical``: 0
missing, 1 out of vocabulary - e.g. an item never rated in training -, 2.. by decreasing count),
capped at the table's rows. Splits: ``u1``..``u5``, ``ua``, ``ub`` (GroupLens's files: ``.base``
trains, ``.test`` validates) or ``time`` (ratings by time; the last ``val_fraction`` validate).
A line that does not parse stops the run naming file, line and field (these files are small and
curated: a bad line means a wrong or damaged directory).

Example:
    >>> source = MovieLensSource("ml-100k", dense_names=["user_age"], sparse_names=["user_id", "item_genres"],
    ...                          table_rows={"user_id": 1000, "item_genres": 25}, batch_size=256)  # doctest: +SKIP
    >>> source.setup(); source.report()["data/rows_train"]  # doctest: +SKIP
    80000
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recframe.data.arrays import Columns, InMemorySource
from recframe.data.categorical import Vocabulary
from recframe.data.report import DataError

DENSE_FEATURES = ("user_age", "item_release_year")
SPARSE_FEATURES = ("user_id", "item_id", "user_age_bucket", "user_gender", "user_occupation", "user_zip",
                   "item_genres", "item_year")
SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub", "time")
AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])
MAX_GENRES = 19


def _fields(path: Path, sep: str, count: int, encoding: str = "utf-8") -> list[list[str]]:
    """Every line's fields; DataError naming file and line when a line has another number of fields."""
    out = []
    with path.open(encoding=encoding) as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split(sep)
            if fields == [""]:
                continue
            if len(fields) != count:
                raise DataError(f"{path}:{number}: {len(fields)} {sep!r}-separated fields, expected {count}")
            out.append(fields)
    return out


def _int(path: Path, number: int, name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}:{number}: field {name}: {text!r} is not an integer") from None


def read_ratings(path: Path) -> np.ndarray:
    """``[n, 4]`` int64 (user, item, rating, timestamp) of a ``u.data``-layout file."""
    names = ("user", "item", "rating", "timestamp")
    rows = _fields(path, "\t", 4)
    return np.array([[_int(path, i + 1, n, v) for n, v in zip(names, r, strict=True)] for i, r in enumerate(rows)],
                    dtype=np.int64).reshape(-1, 4)


class MovieLensSource(InMemorySource):
    """MovieLens 100K ratings as clicks, split into training and validation ratings.

    Args:
        path: the ``ml-100k`` directory.
        dense_names: dense features to produce (names from ``DENSE_FEATURES``), in order.
        sparse_names: sparse features (names from ``SPARSE_FEATURES``), in KJT key order.
        table_rows: rows of the table behind each sparse feature (vocabularies are capped there).
        batch_size: samples per batch per rank.
        split: ``u1``..``u5``, ``ua``, ``ub`` or ``time``.
        val_fraction: ``time`` split: the last fraction of ratings by time that validates.
        shuffle: shuffle the training ratings every epoch.
        seed: seed of the shuffles.
        vocab_threshold: values seen fewer times in training share the out-of-vocabulary row.
        positive_rating: ratings at or above it are positives.
        zip_prefix: leading characters of the zip code kept for ``user_zip``.
    """

    def __init__(self, path: str, dense_names: list[str], sparse_names: list[str], table_rows: dict[str, int],
                 batch_size: int, split: str = "u1", val_fraction: float = 0.1, shuffle: bool = True, seed: int = 0,
                 vocab_threshold: int = 1, positive_rating: int = 4, zip_prefix: int = 3) -> None:
        unknown = [n for n in dense_names if n not in DENSE_FEATURES] + [n for n in sparse_names
                                                                          if n not in SPARSE_FEATURES]
        if unknown or split not in SPLITS:
            raise ValueError(f"MovieLensSource: unknown features {unknown} (known: {DENSE_FEATURES + SPARSE_FEATURES})"
                             f" or split {split!r} (known: {SPLITS})")
        self.path, self.dense_names, self.sparse_names = Path(path), list(dense_names), list(sparse_names)
        self.keys = self.sparse_names  # the KJT keys
        self.table_rows = {n: int(table_rows[n]) for n in sparse_names}
        self.batch_size, self.split, self.val_fraction = batch_size, split, val_fraction
        self.shuffle, self.seed, self.vocab_threshold = shuffle, seed, vocab_threshold
        self.positive_rating, self.zip_prefix = positive_rating, zip_prefix
        self.columns: Columns | None = None
        self.num_train = 0
        self.vocab_rows: dict[str, int] = {}

    def _ratings(self) -> tuple[np.ndarray, int]:
        """All ratings used, training ones first, and how many train."""
        if self.split == "time":
            ratings = read_ratings(self.path / "u.data")
            ratings = ratings[np.lexsort((ratings[:, 1], ratings[:, 0], ratings[:, 3]))]
            return ratings, len(ratings) - int(round(len(ratings) * self.val_fraction))
        base, test = self.path / f"{self.split}.base", self.path / f"{self.split}.test"
        if not base.is_file() or not test.is_file():
            raise DataError(f"{self.path}: split {self.split} needs {base.name} and {test.name}; use data.split=u1 or "
                            "data.split=time")
        train = read_ratings(base)
        return np.concatenate([train, read_ratings(test)]), len(train)

    def _raw_features(self, ratings: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per rating: dense values and raw sparse values (int64; -1 missing; item_genres ``[n, 19]``)."""
        users = _fields(self.path / "u.user", "|", 5)
        items = _fields(self.path / "u.item", "|", 24, encoding="latin-1")
        n_users = max(_int(self.path / "u.user", i + 1, "id", u[0]) for i, u in enumerate(users)) + 1
        n_items = max(_int(self.path / "u.item", i + 1, "id", it[0]) for i, it in enumerate(items)) + 1
        age = np.full(n_users, -1, np.int64)
        gender, occupation, zip_code = (np.full(n_users, -1, np.int64) for _ in range(3))
        codes: dict[str, dict[str, int]] = {"gender": {}, "occupation": {}, "zip": {}}
        for i, (uid, a, g, occ, z) in enumerate(users):
            u = int(uid)
            age[u] = _int(self.path / "u.user", i + 1, "age", a)
            gender[u] = codes["gender"].setdefault(g, len(codes["gender"]))
            occupation[u] = codes["occupation"].setdefault(occ, len(codes["occupation"]))
            zip_code[u] = codes["zip"].setdefault(z[: self.zip_prefix].upper(), len(codes["zip"]))
        year = np.full(n_items, -1, np.int64)
        genres = np.full((n_items, MAX_GENRES), -1, np.int64)
        for i, fields in enumerate(items):
            it = int(fields[0])
            date = fields[2]
            if date:
                year[it] = _int(self.path / "u.item", i + 1, "release date", date.rsplit("-", 1)[-1])
            flags = np.array([_int(self.path / "u.item", i + 1, "genre", f) for f in fields[5:]])
            present = np.flatnonzero(flags)
            genres[it, : present.size] = present
        user, item = ratings[:, 0], ratings[:, 1]
        bad = (user >= n_users) | (item >= n_items) | (age[np.minimum(user, n_users - 1)] < 0)
        if bad.any():
            raise DataError(f"{self.path}: a rating names user {user[bad][0]} / item {item[bad][0]}, absent from "
                            "u.user / u.item")
        release = np.where(year[item] > 0, (year[item] - 1900) / 100.0, 0.0)
        dense = {"user_age": age[user] / 100.0, "item_release_year": release}
        sparse = {"user_id": user, "item_id": item, "user_age_bucket": np.searchsorted(AGE_EDGES, age[user], "right"),
                  "user_gender": gender[user], "user_occupation": occupation[user], "user_zip": zip_code[user],
                  "item_genres": genres[item], "item_year": year[item]}
        return dense, sparse

    def setup(self) -> None:
        if self.columns is not None:
            return
        ratings, self.num_train = self._ratings()
        dense, sparse = self._raw_features(ratings)
        bags = "item_genres" in self.sparse_names
        width = int((sparse["item_genres"] >= 0).sum(axis=1).max()) if bags else 1
        ids = np.full((len(ratings), len(self.sparse_names), width), -1, dtype=np.int64)
        for j, name in enumerate(self.sparse_names):
            raw = sparse[name] if name == "item_genres" else sparse[name][:, None]
            raw = raw[:, :width]
            present = raw >= 0
            train_values = raw[: self.num_train][present[: self.num_train]]
            vocab = Vocabulary.build(train_values, self.vocab_threshold, capacity=self.table_rows[name])
            self.vocab_rows[name] = vocab.num_rows
            mapped = vocab.lookup(np.maximum(raw, 0), ~present)
            if name == "item_genres":  # a bag keeps only its genres (no missing id for the padding)
                mapped = np.where(present, mapped, -1)
            ids[:, j, : raw.shape[1]] = mapped
        self.columns = Columns(
            dense=np.stack([dense[n] for n in self.dense_names], axis=1).astype(np.float32).reshape(len(ratings), -1),
            ids=ids if bags else ids[:, :, 0],
            labels=(ratings[:, 2] >= self.positive_rating).astype(np.float32),
        )

    def report(self) -> dict[str, float]:
        columns = self._columns()
        return {"data/rows_train": self.num_train, "data/rows_val": len(columns) - self.num_train,
                "data/positive_rate_train": round(float(columns.labels[: self.num_train].mean()), 5)}

    def summary(self) -> str:
        columns = self._columns()
        return (f"{self.path}: {len(columns)} ratings (split {self.split}): {self.num_train} for training, "
                f"{len(columns) - self.num_train} for validation; positives: rating >= {self.positive_rating}; "
                f"vocabulary rows per feature: {self.vocab_rows}")

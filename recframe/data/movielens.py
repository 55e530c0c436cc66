"""MovieLens ratings as a click task: data kind ``movielens`` (100K, 1M, latest and joined layouts).

The files are read by ``recframe.data.movielens_files`` (layout detected from the files present).
The label is ``rating >= positive_rating`` (4: 55% positives on 100K). Features, by fixed name (a
config picks any of them, in any order; the ``latest`` layout has no user attributes, so only
``user_id``, ``item_*`` there):

- dense: ``user_age`` (age / 100; the 1M layouts store an age code: 1, 18, 25, ...),
  ``item_release_year`` ((year - 1900) / 100; 0 if unknown).
- sparse: ``user_id``, ``item_id``, ``user_age_bucket`` (<18, 18-24, 25-34, 35-44, 45-49, 50-55,
  56+), ``user_gender``, ``user_occupation``, ``user_zip`` (the first ``zip_prefix`` characters),
  ``item_genres`` (multi-hot), ``item_year`` (release year).

Ids come from a vocabulary counted on the training ratings (``recframe.data.categorical``: 0
missing, 1 out of vocabulary - e.g. an item never rated in training -, 2.. by decreasing count),
capped at the table's rows. Splits: ``u1``..``u5``, ``ua``, ``ub`` (GroupLens's 100K files:
``.base`` trains, ``.test`` validates) or ``time`` (every layout: ratings by time, the last
``val_fraction`` validate).

Example:
    >>> source = MovieLensSource("ml-100k", dense_names=["user_age"], sparse_names=["user_id", "item_genres"],
    ...                          table_rows={"user_id": 1000, "item_genres": 25}, batch_size=256)  # doctest: +SKIP
    >>> source.setup(); source.report()["data/rows_train"]  # doctest: +SKIP
    80000
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from recframe.config.resolve import feature_rows
from recframe.data.arrays import Columns
from recframe.data.categorical import Vocabulary
from recframe.data.in_memory import InMemorySource
from recframe.data.movielens_files import MovieLensData, Ratings, read_100k_ratings, read_movielens
from recframe.data.report import DataError
from recframe.data.source import DATA_SOURCES
from recframe.storage_cache import local_copy

DENSE_FEATURES = ("user_age", "item_release_year")
SPARSE_FEATURES = ("user_id", "item_id", "user_age_bucket", "user_gender", "user_occupation", "user_zip",
                   "item_genres", "item_year")
USER_ATTRIBUTE_FEATURES = ("user_age", "user_age_bucket", "user_gender", "user_occupation", "user_zip")
SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub", "time")
AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])


def missing_features(layout: str, names: list[str]) -> list[str]:
    """The features among ``names`` that a layout's files cannot give (user attributes of ``latest``)."""
    return [n for n in names if n in USER_ATTRIBUTE_FEATURES] if layout == "latest" else []


def _codes(texts: np.ndarray, transform=str) -> np.ndarray:  # noqa: ANN001 (a str -> str function)
    """Per id, a code (int64) of its text in first-seen order; -1 for ids without a text."""
    seen: dict[str, int] = {}
    out = np.full(texts.shape[0], -1, np.int64)
    for i, text in enumerate(texts):
        if text:
            out[i] = seen.setdefault(transform(text), len(seen))
    return out


def user_values(data: MovieLensData, users: np.ndarray, zip_prefix: int) -> dict[str, np.ndarray]:
    """Raw values (-1 missing) of the user features of ``users``: ids, and attributes where the layout has them."""
    out = {"user_id": users}
    if data.age is not None:
        assert data.gender is not None and data.occupation is not None and data.zip_code is not None
        age = data.age[users]
        out.update(user_age=age / 100.0, user_age_bucket=np.searchsorted(AGE_EDGES, age, "right"),
                   user_gender=_codes(data.gender)[users], user_occupation=_codes(data.occupation)[users],
                   user_zip=_codes(data.zip_code, lambda z: z[:zip_prefix].upper())[users])
    return out


def item_values(data: MovieLensData, items: np.ndarray) -> dict[str, np.ndarray]:
    """Raw values of the item features of each of ``items`` (``item_genres``: ``[n, MAX_GENRES]``, -1 padded)."""
    year = data.year[items]
    return {"item_id": items, "item_genres": data.genres[items], "item_year": year,
            "item_release_year": np.where(year > 0, (year - 1900) / 100.0, 0.0)}


def vocab_ids(raw: np.ndarray, num_train: int, threshold: int, rows: int, bag: bool) -> tuple[np.ndarray, Vocabulary]:
    """Table rows ``[n, w]`` of raw values (``[n]``, or bags ``[n, w]``; -1 missing) by a vocabulary of the first
    ``num_train`` rows (capped at ``rows``), and that vocabulary (``map_values`` maps more values alike).

    Example:
        >>> vocab_ids(np.array([5, 5, 7, -1]), num_train=3, threshold=1, rows=10, bag=False)[0][:, 0].tolist()
        [2, 2, 3, 0]
    """
    raw = raw if raw.ndim == 2 else raw[:, None]
    present = raw >= 0
    vocab = Vocabulary.build(raw[:num_train][present[:num_train]], threshold, capacity=rows)
    return map_values(vocab, raw, bag), vocab


def map_values(vocab: Vocabulary, raw: np.ndarray, bag: bool) -> np.ndarray:
    """Table rows ``[n, w]`` of raw values (``[n]`` or ``[n, w]``, -1 missing): a bag keeps only its values (-1
    padding), a missing single value is row 0 (``MISSING_ID``)."""
    raw = raw if raw.ndim == 2 else raw[:, None]
    present = raw >= 0
    mapped = vocab.lookup(np.maximum(raw, 0), ~present)
    return np.where(present, mapped, -1) if bag else mapped


class MovieLensSource(InMemorySource):
    """MovieLens ratings as clicks, split into training and validation ratings.

    Args:
        path: the MovieLens directory (``ml-100k``, ``ml-1m``, ``ml-latest-small``) or joined CSV file.
        dense_names: dense features to produce (names from ``DENSE_FEATURES``), in order.
        sparse_names: sparse features (names from ``SPARSE_FEATURES``), in KJT key order.
        table_rows: rows of the table behind each sparse feature (vocabularies are capped there).
        batch_size: samples per batch per rank.
        split: ``u1``..``u5``, ``ua``, ``ub`` (100K only) or ``time``.
        val_fraction: ``time`` split: the last fraction of ratings by time that validates.
        shuffle: shuffle the training ratings every epoch.
        seed: seed of the shuffles.
        vocab_threshold: values seen fewer times in training share the out-of-vocabulary row.
        positive_rating: ratings at or above it are positives.
        zip_prefix: leading characters of the zip code kept for ``user_zip``.
        cache_dir: where a ``path`` that is a URL is copied (``recframe.storage_cache``; None: its default).
    """

    def __init__(self, path: str, dense_names: list[str], sparse_names: list[str], table_rows: dict[str, int],
                 batch_size: int, split: str = "u1", val_fraction: float = 0.1, shuffle: bool = True, seed: int = 0,
                 vocab_threshold: int = 1, positive_rating: float = 4, zip_prefix: int = 3,
                 cache_dir: str | None = None) -> None:
        unknown = [n for n in dense_names if n not in DENSE_FEATURES] + [n for n in sparse_names
                                                                          if n not in SPARSE_FEATURES]
        if unknown or split not in SPLITS:
            raise ValueError(f"MovieLensSource: unknown features {unknown} (known: {DENSE_FEATURES + SPARSE_FEATURES})"
                             f" or split {split!r} (known: {SPLITS})")
        self.path, self.dense_names, self.sparse_names = Path(path), list(dense_names), list(sparse_names)
        self.url, self.cache_dir = path, cache_dir  # setup reads a URL's local copy
        self.keys = self.sparse_names  # the KJT keys
        self.table_rows = {n: int(table_rows[n]) for n in sparse_names}
        self.batch_size, self.split, self.val_fraction = batch_size, split, val_fraction
        self.shuffle, self.seed, self.vocab_threshold = shuffle, seed, vocab_threshold
        self.positive_rating, self.zip_prefix = positive_rating, zip_prefix
        self.columns: Columns | None = None
        self.num_train = 0
        self.layout = ""
        self.vocab_rows: dict[str, int] = {}
        self.vocabularies: dict[str, Vocabulary] = {}
        self.titles: np.ndarray | None = None

    def _ratings(self, data: MovieLensData) -> tuple[Ratings, int]:
        """All ratings used, training ones first, and how many train."""
        if self.split == "time":
            r = data.ratings
            ratings = r.take(np.lexsort((r.item, r.user, r.timestamp)))
            return ratings, len(ratings) - int(round(len(ratings) * self.val_fraction))
        base, test = self.path / f"{self.split}.base", self.path / f"{self.split}.test"
        if data.layout != "100k" or not base.is_file() or not test.is_file():
            raise DataError(f"{self.path}: split {self.split} needs {base.name} and {test.name} (GroupLens's 100K "
                            f"split files; this is the {data.layout} layout): use data.split=time, or data.split=u1")
        train, held_out = read_100k_ratings(base), read_100k_ratings(test)
        ratings = Ratings(*(np.concatenate([a, b]) for a, b in (
            (train.user, held_out.user), (train.item, held_out.item), (train.rating, held_out.rating),
            (train.timestamp, held_out.timestamp))))
        return ratings, len(train)

    def setup(self) -> None:
        if self.columns is not None:
            return
        self.path = local_copy(self.url, self.cache_dir)  # a URL: its local copy (the path itself otherwise)
        data = read_movielens(self.path)
        self.layout = data.layout
        absent = missing_features(data.layout, self.dense_names + self.sparse_names)
        if absent:
            raise DataError(f"{self.path}: the {data.layout} layout has no user attributes, so no features {absent}; "
                            "use features=movielens_latest")
        ratings, self.num_train = self._ratings(data)
        values = {**user_values(data, ratings.user, self.zip_prefix), **item_values(data, ratings.item)}
        bags = "item_genres" in self.sparse_names
        width = max(1, int((values["item_genres"] >= 0).sum(axis=1).max())) if bags else 1  # 1: no item has genres
        ids = np.full((len(ratings), len(self.sparse_names), width), -1, dtype=np.int64)
        for j, name in enumerate(self.sparse_names):
            raw = values[name][:, :width] if name == "item_genres" else values[name]
            mapped, vocab = vocab_ids(raw, self.num_train, self.vocab_threshold, self.table_rows[name],
                                      bag=name == "item_genres")
            self.vocab_rows[name], self.vocabularies[name] = vocab.num_rows, vocab
            ids[:, j, : mapped.shape[1]] = mapped
        self.titles = data.titles
        dense = np.stack([values[n] for n in self.dense_names], axis=1) if self.dense_names else \
            np.zeros((len(ratings), 0))
        self.columns = Columns(
            dense=dense.astype(np.float32),
            ids=ids if bags else ids[:, :, 0],
            labels=(ratings.rating >= self.positive_rating).astype(np.float32),
        )

    def row_labels(self, feature: str) -> dict[int, str]:
        """What each vocabulary row of ``feature`` stands for: the raw value, and for ``item_id`` the movie's title
        (the Projector's metadata). Rows 0 (missing) and 1 (out of vocabulary) are not listed."""
        vocab = self.vocabularies.get(feature)
        if vocab is None:
            return {}
        titles = self.titles if feature == "item_id" else None
        out = {}
        for value, row in zip(vocab.sorted_values.tolist(), vocab.sorted_ids.tolist(), strict=True):
            title = titles[value] if titles is not None and value < len(titles) else ""
            out[int(row)] = f"{value} {title}".strip()
        return out

    def report(self) -> dict[str, float]:
        columns = self._columns()
        return {"data/rows_train": self.num_train, "data/rows_val": len(columns) - self.num_train,
                "data/positive_rate_train": round(float(columns.labels[: self.num_train].mean()), 5)}

    def summary(self) -> str:
        columns = self._columns()
        return (f"{self.path} ({self.layout} layout): {len(columns)} ratings (split {self.split}): {self.num_train} "
                f"for training, {len(columns) - self.num_train} for validation; positives: rating >= "
                f"{self.positive_rating}; vocabulary rows per feature: {self.vocab_rows}")


@DATA_SOURCES.register("movielens")
def movielens_from_config(cfg: DictConfig) -> MovieLensSource:
    """The MovieLens rating source of ``data=movielens``."""
    data = cfg.data
    return MovieLensSource(
        str(data.path), dense_names=list(cfg.features.dense), sparse_names=list(cfg.features.sparse),
        table_rows=feature_rows(cfg), batch_size=data.batch_size, split=data.split, val_fraction=data.val_fraction,
        shuffle=data.shuffle, seed=data.seed, vocab_threshold=data.vocab_threshold,
        positive_rating=data.positive_rating, zip_prefix=data.zip_prefix, cache_dir=cfg.storage.cache_dir,
    )

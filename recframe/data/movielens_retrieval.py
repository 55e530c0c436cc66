"""MovieLens as a retrieval task for two-tower models: data kind ``movielens_retrieval``.

Every rating is an interaction (implicit feedback). Each user's ratings are ordered by time (ties:
item id); the last one is held out: one validation sample per user (users with one rating only are
left out, and counted). Every earlier rating but the first is a training sample: (the user, their
previous ``history_length`` items, the item). Labels are 1 (positive pairs; the other items of a
batch are the negatives, ``recframe.models.TwoTower``).

Features (sparse only; a config picks any of them, by name):

- user tower: ``user_id``, ``user_history`` (a sequence of up to ``history_length`` item ids, most
  recent last; pool it with ``mean``), and where the layout has them ``user_age_bucket``,
  ``user_gender``, ``user_occupation``, ``user_zip``;
- item tower: ``item_id``, ``item_genres`` (multi-hot), ``item_year``.

Items get one vocabulary, counted on the training interactions, used by ``item_id`` and
``user_history`` alike (each capped at its table's rows); a held-out item never seen in training is
out of vocabulary (row 1). Files and layouts: ``recframe.data.movielens_files``.

Example:
    >>> source = MovieLensRetrievalSource("ml-100k", ["user_id", "user_history", "item_id"],
    ...                                   {"user_id": 1000, "user_history": 1700, "item_id": 1700},
    ...                                   batch_size=256)  # doctest: +SKIP
    >>> source.setup(); source.report()["data/rows_val"]  # doctest: +SKIP
    943
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from recframe.config.resolve import feature_rows
from recframe.data.arrays import Columns
from recframe.data.categorical import Vocabulary
from recframe.data.in_memory import InMemorySource
from recframe.data.movielens import item_values, map_values, missing_features, user_values, vocab_ids
from recframe.data.movielens_files import MovieLensData, read_movielens
from recframe.data.report import DataError
from recframe.data.source import DATA_SOURCES
from recframe.sparse import KeyedJaggedTensor
from recframe.storage_cache import local_copy

USER_FEATURES = ("user_id", "user_history", "user_age_bucket", "user_gender", "user_occupation", "user_zip")
ITEM_FEATURES = ("item_id", "item_genres", "item_year")
ITEM_VOCAB_FEATURES = ("item_id", "user_history")  # features whose values are item ids (one vocabulary)


def histories(user: np.ndarray, item: np.ndarray, at: np.ndarray, length: int) -> np.ndarray:
    """The ``length`` items before each position ``at`` of the same user, ``[len(at), length]``, oldest first,
    left-padded with -1.

    Args:
        user: users of interactions sorted by user, then time.
        item: their items.
        at: positions to take histories for.
        length: items per history.

    Example:
        >>> histories(np.array([1, 1, 1, 2, 2]), np.array([7, 8, 9, 5, 6]), np.array([2, 4]), 3).tolist()
        [[-1, 7, 8], [-1, -1, 5]]
    """
    first = np.searchsorted(user, user[at], side="left")  # each position's user starts here
    idx = at[:, None] - length + np.arange(length)[None, :]
    return np.where(idx >= first[:, None], item[np.maximum(idx, 0)], -1)


class MovieLensRetrievalSource(InMemorySource):
    """(user, history, next item) samples; the last item of each user validates.

    Args:
        path: the MovieLens directory or joined CSV file (any layout of ``recframe.data.movielens_files``).
        sparse_names: features (names from ``USER_FEATURES`` and ``ITEM_FEATURES``), in KJT key order.
        table_rows: rows of the table behind each feature (vocabularies are capped there).
        batch_size: samples per batch per rank.
        history_length: items in ``user_history``.
        shuffle: shuffle the training samples every epoch.
        seed: seed of the shuffles.
        vocab_threshold: values seen fewer times in training share the out-of-vocabulary row.
        zip_prefix: leading characters of the zip code kept for ``user_zip``.
        cache_dir: where a ``path`` that is a URL is copied (``recframe.storage_cache``; None: its default).
    """

    def __init__(self, path: str, sparse_names: list[str], table_rows: dict[str, int], batch_size: int,
                 history_length: int = 20, shuffle: bool = True, seed: int = 0, vocab_threshold: int = 1,
                 zip_prefix: int = 3, cache_dir: str | None = None) -> None:
        unknown = [n for n in sparse_names if n not in USER_FEATURES + ITEM_FEATURES]
        if unknown or history_length < 1:
            raise ValueError(f"MovieLensRetrievalSource: unknown features {unknown} (known: "
                             f"{USER_FEATURES + ITEM_FEATURES}) or history_length {history_length} < 1")
        self.path, self.keys = Path(path), list(sparse_names)
        self.url, self.cache_dir = path, cache_dir  # setup reads a URL's local copy
        self.table_rows = {n: int(table_rows[n]) for n in sparse_names}
        self.batch_size, self.history_length, self.shuffle, self.seed = batch_size, history_length, shuffle, seed
        self.vocab_threshold, self.zip_prefix = vocab_threshold, zip_prefix
        self.columns: Columns | None = None
        self.num_train = 0
        self.layout = ""
        self.single_rating_users = 0
        self.vocab_rows: dict[str, int] = {}
        self.vocabularies: dict[str, Vocabulary] = {}
        self.catalog_items = np.zeros(0, np.int64)
        self.data: MovieLensData | None = None

    def setup(self) -> None:
        if self.columns is not None:
            return
        self.path = local_copy(self.url, self.cache_dir)  # a URL: its local copy (the path itself otherwise)
        data = read_movielens(self.path)
        self.layout = data.layout
        absent = missing_features(data.layout, self.keys)
        if absent:
            raise DataError(f"{self.path}: the {data.layout} layout has no user attributes, so no features {absent}; "
                            "use features=movielens_latest_retrieval tables=movielens_latest_retrieval "
                            "'model.user_features=[user_id,user_history]'")
        r = data.ratings.take(np.lexsort((data.ratings.item, data.ratings.timestamp, data.ratings.user)))
        last = np.r_[r.user[1:] != r.user[:-1], True]  # each user's last rating
        first = np.r_[True, r.user[1:] != r.user[:-1]]
        self.single_rating_users = int((first & last).sum())
        train_at = np.flatnonzero(~first & ~last)
        val_at = np.flatnonzero(last & ~first)
        at = np.concatenate([train_at, val_at])
        self.num_train = train_at.size
        if self.num_train == 0:
            raise DataError(f"{self.path}: no user has 3 ratings or more, so there is nothing to train on")
        history = histories(r.user, r.item, at, self.history_length)
        values = {**user_values(data, r.user[at], self.zip_prefix), **item_values(data, r.item[at]),
                  "user_history": history}
        item_counts = r.item[~last]  # the training interactions (every rating but each user's last)
        width = max([self.history_length] * ("user_history" in self.keys)
                    + [int((values["item_genres"] >= 0).sum(axis=1).max())] * ("item_genres" in self.keys) + [1])
        ids = np.full((at.size, len(self.keys), width), -1, dtype=np.int64)
        for j, name in enumerate(self.keys):
            raw = values[name]
            if name in ITEM_VOCAB_FEATURES:
                vocab = Vocabulary.build(item_counts, self.vocab_threshold, capacity=self.table_rows[name])
                mapped = map_values(vocab, raw, bag=raw.ndim == 2)
            else:
                mapped, vocab = vocab_ids(raw, self.num_train, self.vocab_threshold, self.table_rows[name],
                                          bag=name == "item_genres")
            self.vocabularies[name], self.vocab_rows[name] = vocab, vocab.num_rows
            ids[:, j, : mapped.shape[1]] = mapped[:, :width]
        self.catalog_items = np.unique(r.item)  # every rated item
        self.data = data
        self.columns = Columns(dense=np.zeros((at.size, 0), np.float32), ids=ids if width > 1 else ids[:, :, 0],
                               labels=np.ones(at.size, np.float32))

    def item_catalog(self) -> tuple[np.ndarray, KeyedJaggedTensor]:
        """Every rated item: its MovieLens id, and its item features as a KJT (one sample per item, the item
        features of ``keys`` in their order, mapped by the training vocabularies), for a retrieval index.

        Example:
            >>> items, kjt = source.item_catalog()  # doctest: +SKIP
            >>> kjt.stride() == len(items)  # doctest: +SKIP
            True
        """
        self.setup()
        assert self.data is not None
        values = item_values(self.data, self.catalog_items)
        keys = [k for k in self.keys if k in ITEM_FEATURES]
        ids, lengths = [], []
        for name in keys:
            mapped = map_values(self.vocabularies[name], values[name], bag=name == "item_genres")
            present = mapped >= 0
            ids.append(torch.from_numpy(mapped[present]))
            lengths.append(torch.from_numpy(present.sum(axis=1)))
        return self.catalog_items, KeyedJaggedTensor.from_lengths(keys, torch.cat(ids), torch.cat(lengths))

    def report(self) -> dict[str, float]:
        columns = self._columns()
        return {"data/rows_train": self.num_train, "data/rows_val": len(columns) - self.num_train,
                "data/single_rating_users": self.single_rating_users}

    def summary(self) -> str:
        columns = self._columns()
        return (f"{self.path} ({self.layout} layout): {self.num_train} training interactions with histories of up "
                f"to {self.history_length} items, {len(columns) - self.num_train} users' last items held out for "
                f"validation ({self.single_rating_users} users with one rating left out); vocabulary rows per "
                f"feature: {self.vocab_rows}")


@DATA_SOURCES.register("movielens_retrieval")
def movielens_retrieval_from_config(cfg: DictConfig) -> MovieLensRetrievalSource:
    """MovieLens user histories and next items, for retrieval models (``data=movielens_retrieval``)."""
    data = cfg.data
    return MovieLensRetrievalSource(
        str(data.path), sparse_names=list(cfg.features.sparse), table_rows=feature_rows(cfg),
        batch_size=data.batch_size, history_length=data.history_length, shuffle=data.shuffle, seed=data.seed,
        vocab_threshold=data.vocab_threshold, zip_prefix=data.zip_prefix, cache_dir=cfg.storage.cache_dir,
    )

"""Data sources over real files for RecDataModule: a Criteo TSV read into memory (``criteo_tsv``).

``CriteoTsvSource`` parses the whole file once at ``setup`` (small files such as the Kaggle
sample; use ``recframe preprocess`` and ``criteo_binary`` for big ones). Rows keep file order;
the last ``val_fraction`` of the valid rows are the validation set, the others are trained on in
shuffled epochs (``recframe.data.arrays``). Categorical values become table rows by modulo of each
table's size or by a vocabulary counted on the training rows only
(``recframe.data.categorical``; row 0 = missing).

Example:
    >>> source = CriteoTsvSource("train.txt", keys=[f"cat_{i}" for i in range(26)], table_rows=[1000] * 26,
    ...                          batch_size=128, val_fraction=0.2)  # doctest: +SKIP
    >>> source.setup(); source.report()["data/rows_train"]  # doctest: +SKIP
    8000
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from recframe.config.resolve import feature_rows
from recframe.data.arrays import Columns
from recframe.data.categorical import Vocabulary, modulo_ids
from recframe.data.criteo import NUM_SPARSE, CriteoRows, read_criteo_tsv
from recframe.data.in_memory import InMemorySource
from recframe.data.report import DataError, SkipReport
from recframe.data.source import DATA_SOURCES
from recframe.vocab import IdMapping


def split_rows(num_rows: int, val_fraction: float) -> int:
    """Training rows when the last ``val_fraction`` of ``num_rows`` rows are for validation."""
    return num_rows - int(round(num_rows * val_fraction))


class CriteoTsvSource(InMemorySource):
    """A Criteo TSV file in memory, split into training and validation rows by file order.

    Args:
        path: the TSV file (Kaggle ``train.txt`` or 1TB ``day_N`` layout, with labels).
        keys: names of the 26 sparse features (KJT keys), in column order.
        table_rows: rows of the table behind each key.
        batch_size: samples per batch per rank.
        val_fraction: the last fraction of rows (file order) used for validation.
        shuffle: shuffle the training rows every epoch.
        seed: seed of the shuffles.
        id_mapping: ``modulo`` or ``vocab``.
        vocab_threshold: ``vocab``: minimum count in the training rows for a row of its own.
        on_error: ``skip`` or ``error`` for malformed lines.
        max_examples: malformed lines described per kind.
        pad_short_rows: read rows with fewer fields as having trailing empty fields.
        val_path: a validation TSV (None: the last ``val_fraction`` of ``path``'s rows validate).
        test_path: a test TSV with labels, evaluated once after training (None: none).
    """

    def __init__(self, path: str, keys: list[str], table_rows: list[int], batch_size: int,
                 val_fraction: float = 0.1, shuffle: bool = True, seed: int = 0, id_mapping: str = "modulo",
                 vocab_threshold: int = 1, on_error: str = "skip", max_examples: int = 5,
                 pad_short_rows: bool = False, val_path: str | None = None, test_path: str | None = None) -> None:
        if len(keys) != NUM_SPARSE or len(table_rows) != NUM_SPARSE:
            raise ValueError(f"CriteoTsvSource: Criteo has {NUM_SPARSE} categorical features, got {len(keys)} keys "
                             f"and {len(table_rows)} table sizes")
        if problem := IdMapping.problem("CriteoTsvSource: id_mapping", id_mapping):
            raise ValueError(problem)
        self.path, self.keys, self.table_rows = path, list(keys), [int(r) for r in table_rows]
        self.batch_size, self.val_fraction, self.shuffle, self.seed = batch_size, val_fraction, shuffle, seed
        self.id_mapping, self.vocab_threshold = id_mapping, vocab_threshold
        self.on_error, self.max_examples, self.pad_short_rows = on_error, max_examples, pad_short_rows
        self.val_path, self.test_path = val_path, test_path
        self.columns: Columns | None = None
        self.num_train = 0
        self.skipped = SkipReport(())
        self.vocab_rows: list[int] = []
        self.vocab_truncated = 0

    def setup(self) -> None:
        if self.columns is not None:
            return
        parts = []  # training, [validation], [test]: one file after the other (vocabularies count training rows)
        for path in (p for p in (self.path, self.val_path, self.test_path) if p is not None):
            part, skipped = read_criteo_tsv(path, has_label=True, pad_short_rows=self.pad_short_rows,
                                            on_error=self.on_error, max_examples=self.max_examples)
            if path == self.path:
                self.skipped = skipped
            else:  # counted with the training file's (the messages name the file)
                self.skipped.merge(skipped)
            if len(part) == 0:
                raise DataError(f"{path}: no valid rows ({skipped.total} malformed lines skipped). "
                                + skipped.summary(path) + "\nIs it a Criteo TSV with labels (40 fields)?")
            parts.append(part)
        rows = CriteoRows.concat(parts, has_label=True)
        self.num_train = len(parts[0]) if self.val_path is not None else split_rows(len(parts[0]), self.val_fraction)
        ids = np.empty(rows.categorical.shape, dtype=np.int32 if max(self.table_rows) < 2**31 else np.int64)
        for j, table_rows in enumerate(self.table_rows):
            values, missing = rows.categorical[:, j], rows.missing[:, j]
            if self.id_mapping == IdMapping.modulo:
                ids[:, j] = modulo_ids(values, missing, table_rows)
            else:
                train = slice(0, self.num_train)
                vocab = Vocabulary.build(values[train][~missing[train]], self.vocab_threshold, capacity=table_rows)
                ids[:, j] = vocab.lookup(values, missing)
                self.vocab_rows.append(vocab.num_rows)
                self.vocab_truncated += vocab.truncated
        assert rows.labels is not None
        self.split_files(Columns(dense=rows.dense, ids=ids, labels=rows.labels), [len(p) for p in parts],
                         self.val_path is not None, self.val_fraction)

    def report(self) -> dict[str, float]:
        out = self.split_sizes()
        if self.id_mapping == IdMapping.vocab:
            out["data/vocab_rows"] = int(sum(self.vocab_rows))
            out["data/vocab_truncated_values"] = self.vocab_truncated
        out.update(self.skipped.metrics())
        return out

    def summary(self) -> str:
        text = f"{self.path}: {self.split_summary(self.val_path, self.test_path)}; "
        text += self.skipped.summary(self.path).removeprefix(f"{self.path}: ")
        if self.vocab_truncated:
            text += (f"\n{self.vocab_truncated} categorical values over the vocabulary threshold did not fit their "
                     f"tables and share the out-of-vocabulary row; vocabularies need {self.vocab_rows} rows")
        return text


@DATA_SOURCES.register("criteo_tsv")
def criteo_tsv_from_config(cfg: DictConfig) -> CriteoTsvSource:
    """The Criteo TSV source of ``data=criteo_tsv``."""
    data, rows = cfg.data, feature_rows(cfg)
    return CriteoTsvSource(
        str(data.path), keys=list(cfg.features.sparse), table_rows=[rows[f] for f in cfg.features.sparse],
        batch_size=data.batch_size, val_fraction=data.val_fraction, shuffle=data.shuffle, seed=data.seed,
        id_mapping=data.id_mapping, vocab_threshold=data.vocab_threshold, on_error=data.on_error,
        max_examples=data.max_reported_errors, pad_short_rows=data.pad_short_rows, val_path=data.val_path,
        test_path=data.test_path,
    )

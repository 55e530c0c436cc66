"""Validation and test rows from files of their own (issue 16, item 2): ``data.val_path`` and ``data.test_path``
for the tabular, Criteo TSV and Criteo binary sources; ``val_fraction`` still splits a single file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recframe.data.binary import CriteoBinarySource
from recframe.data.report import DataError
from recframe.data.sources import CriteoTsvSource
from recframe.data.spec import SpecDefaults, spec_from_config
from recframe.data.tabular import TabularSource
from tests.shared_data import KAGGLE_SAMPLE, kaggle_head_preprocessed, require

KEYS = [f"cat_{i}" for i in range(26)]


def write(path: Path, rows: list[str]) -> str:
    path.write_text("label,x,c\n" + "".join(f"{r}\n" for r in rows))
    return str(path)


def labels(dataset) -> list[float]:  # noqa: ANN001 (an IterableDataset of Batches)
    return [float(v) for batch in dataset for v in batch.labels]


def test_tabular_validates_and_tests_on_their_own_files(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", [f"{i % 2},{i},a{i % 3}" for i in range(20)])
    val = write(tmp_path / "val.csv", ["1,0,a0", "0,1,new", "1,2,a1"])  # "new" is in no training row
    test = write(tmp_path / "test.csv", ["0,5,a2", "1,6,a2"])
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults(id_mapping="vocab"))
    source = TabularSource(train, spec, {"c": 10}, batch_size=4, val_fraction=0.5, val_path=val, test_path=test)
    assert source.report()["data/rows_train"] == 20  # val_fraction does not apply: the validation file does
    assert source.report()["data/rows_val"] == 3 and source.report()["data/rows_test"] == 2
    assert labels(source.val_dataset(0, 1)) == [1.0, 0.0, 1.0]
    assert labels(source.test_dataset(0, 1)) == [0.0, 1.0]
    val_ids = [int(v) for batch in source.val_dataset(0, 1) for v in batch.sparse_features.values()]
    assert val_ids[1] == 1  # the vocabulary counts training rows only: "new" is out of vocabulary (row 1)
    assert "20 for training, 3 for validation (" in source.summary()
    single = TabularSource(train, spec, {"c": 10}, batch_size=4, val_fraction=0.5)  # one file: val_fraction
    assert single.report()["data/rows_val"] == 10 and single.test_dataset(0, 1) is None
    bad = write(tmp_path / "bad.csv", ["7,0,a0"])
    with pytest.raises(DataError, match="bad.csv: no valid rows"):
        TabularSource(train, spec, {"c": 10}, batch_size=4, val_path=bad).setup()


def test_criteo_tsv_takes_validation_and_test_files(tmp_path: Path) -> None:
    lines = require(KAGGLE_SAMPLE).read_text().splitlines()
    for name, part in (("train", lines[:300]), ("val", lines[300:400]), ("test", lines[400:450])):
        (tmp_path / f"{name}.txt").write_text("\n".join(part) + "\n")
    source = CriteoTsvSource(str(tmp_path / "train.txt"), KEYS, [1000] * 26, batch_size=50, id_mapping="vocab",
                             val_path=str(tmp_path / "val.txt"), test_path=str(tmp_path / "test.txt"))
    report = source.report()
    assert (report["data/rows_train"], report["data/rows_val"], report["data/rows_test"]) == (300, 100, 50)
    expected = [float(line.split("\t")[0]) for line in lines[300:400]]
    assert labels(source.val_dataset(0, 1)) == expected


def test_criteo_binary_takes_directories_with_the_same_ids(tmp_path: Path) -> None:
    directory = str(kaggle_head_preprocessed(3000))  # raw ids
    source = CriteoBinarySource(directory, KEYS, [1000] * 26, batch_size=100, val_path=directory,
                                test_path=directory)
    report = source.report()
    assert (report["data/rows_train"], report["data/rows_val"], report["data/rows_test"]) == (3000, 3000, 3000)
    np.testing.assert_array_equal(np.array(labels(source.test_dataset(0, 1))), np.asarray(source.columns.labels))
    from recframe.data.preprocess import preprocess_command

    head = tmp_path / "head.txt"
    head.write_text("\n".join(require(KAGGLE_SAMPLE).read_text().splitlines()[:200]) + "\n")
    vocab = tmp_path / "vocab_bin"
    assert preprocess_command(["criteo", "--input", str(head), "--output", str(vocab), "--workers", "1", "--quiet",
                               "--vocab-threshold", "2"]) == 0
    with pytest.raises(DataError, match="data.val_path=.*vocab_bin: its ids do not mean what those of data.path"):
        CriteoBinarySource(directory, KEYS, [1000] * 26, batch_size=100, val_path=str(vocab)).setup()

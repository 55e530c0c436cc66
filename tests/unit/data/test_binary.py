"""`recframe preprocess criteo` and the criteo_binary source: the binary layout holds exactly what the
TSV reader reads, in every id mode and with worker processes, and loads into the same batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recframe.data.binary import CriteoBinarySource, NpyAppender, feature_map_value
from recframe.data.categorical import Vocabulary, modulo_ids
from recframe.data.criteo import read_criteo_tsv
from recframe.data.preprocess import Options, preprocess_command, preprocess_criteo
from recframe.data.report import DataError
from recframe.data.sources import CriteoTsvSource
from tests.unit.data.test_arrays import KEYS, write_tsv

GARBAGE = ["junk", "2" + "\t0" * 39, "0\tx" + "\t0" * 38]


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    """A TSV file of 300 rows with 3 garbage lines (one short row, one bad label, one bad dense)."""
    path = tmp_path / "train.txt"
    write_tsv(path, 300, seed=4)
    lines = path.read_text().splitlines()
    for at, garbage in zip((10, 150, 290), GARBAGE, strict=True):
        lines.insert(at, garbage)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_npy_appender_round_trip(tmp_path: Path) -> None:
    with NpyAppender(tmp_path / "a.npy", np.int32, (3,)) as out:
        for k in range(4):
            out.append(np.full((k, 3), k))
    loaded = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert loaded.shape == (6, 3) and loaded.dtype == np.int32 and loaded[:, 0].tolist() == [1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize(("mode", "workers"), [("raw", 1), ("hash", 2), ("vocab", 1), ("vocab", 2)])
def test_preprocess_holds_what_the_reader_reads(mode: str, workers: int, tsv: Path, tmp_path: Path) -> None:
    options = Options(hash_size=50 if mode == "hash" else None, vocab_threshold=3 if mode == "vocab" else None)
    out = tmp_path / "bin"
    fm = preprocess_criteo([str(tsv)], out, options, workers=workers, chunk_bytes=2000, progress=False)
    rows, report = read_criteo_tsv(str(tsv))
    assert fm["rows"] == len(rows) == 300 and fm["id_mode"] == mode
    assert fm["skipped"]["counts"] == report.counts and report.total == 3
    assert json.loads((out / "feature_map.json").read_text()) == fm
    np.testing.assert_array_equal(np.load(out / "dense.npy"), rows.dense)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), rows.labels.astype(np.uint8))
    sparse = np.load(out / "sparse.npy", mmap_mode="r")
    cats, missing = rows.categorical, rows.missing
    assert fm["distinct_values"]["C1"] == len(np.unique(cats[~missing[:, 0], 0]))
    if mode == "raw":
        assert sparse.dtype == np.int64
        np.testing.assert_array_equal(sparse, np.where(missing, -1, cats.astype(np.int64)))
    elif mode == "hash":
        assert sparse.dtype == np.int32 and fm["num_embeddings"]["C5"] == 50
        np.testing.assert_array_equal(sparse, modulo_ids(cats, missing, 50).reshape(cats.shape))
    else:
        assert sparse.dtype == np.int32 and not (out / "sparse_raw.npy").exists()
        for j in range(26):
            vocab = Vocabulary.build(cats[~missing[:, j], j], threshold=3)
            np.testing.assert_array_equal(sparse[:, j], vocab.lookup(cats[:, j], missing[:, j]))
            assert fm["num_embeddings"][f"C{j + 1}"] == vocab.num_rows


def batches(dataset) -> list[tuple[list, list, list]]:  # noqa: ANN001
    return [(b.dense_features.tolist(), b.sparse_features.values().tolist(), b.labels.tolist()) for b in dataset]


def test_binary_raw_loads_the_same_batches_as_the_tsv(tsv: Path, tmp_path: Path) -> None:
    preprocess_criteo([str(tsv)], tmp_path / "bin", Options(), progress=False)
    sizes = [7 + j for j in range(26)]
    common = {"keys": KEYS, "table_rows": sizes, "batch_size": 16, "val_fraction": 0.25, "seed": 5}
    text, binary = CriteoTsvSource(str(tsv), **common), CriteoBinarySource(str(tmp_path / "bin"), **common)
    for rank in (0, 1):
        assert batches(text.train_dataset(rank, 2, 3)) == batches(binary.train_dataset(rank, 2, 3))
        assert batches(text.val_dataset(rank, 2)) == batches(binary.val_dataset(rank, 2))
    assert binary.report()["data/skipped_lines"] == 3 and binary.report()["data/rows_val"] == 75


def test_vocab_ids_past_a_table_share_the_oov_row(tsv: Path, tmp_path: Path) -> None:
    fm = preprocess_criteo([str(tsv)], tmp_path / "bin", Options(vocab_threshold=1), progress=False)
    assert fm["num_embeddings"]["C1"] > 6
    source = CriteoBinarySource(str(tmp_path / "bin"), KEYS, [6] * 26, batch_size=150, val_fraction=0.5,
                                id_mapping="vocab", vocab_threshold=1, shuffle=False)
    ids = torch.cat([b.sparse_features.values() for b in source.train_dataset(0, 1, 0)])
    stored = np.load(tmp_path / "bin" / "sparse.npy")[:150].T.reshape(-1)
    assert ids.tolist() == np.where(stored >= 6, 1, stored).tolist()


def test_a_directory_that_does_not_match_the_config_is_a_clear_error(tsv: Path, tmp_path: Path) -> None:
    preprocess_criteo([str(tsv)], tmp_path / "hash", Options(hash_size=100), progress=False)
    with pytest.raises(DataError, match="preprocess with --vocab-threshold 20"):
        CriteoBinarySource(str(tmp_path / "hash"), KEYS, [100] * 26, 8, id_mapping="vocab", vocab_threshold=20).setup()
    with pytest.raises(DataError, match="set their num_embeddings >= 100"):
        CriteoBinarySource(str(tmp_path / "hash"), KEYS, [50] * 26, 8).setup()
    with pytest.raises(DataError, match="recframe preprocess criteo --input"):
        CriteoBinarySource(str(tmp_path / "nothing"), KEYS, [50] * 26, 8).setup()
    assert feature_map_value(str(tmp_path / "hash"), "num_embeddings.C3") == 100


def test_command_line(tsv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bin"
    assert preprocess_command(["criteo", "--input", str(tsv), "--output", str(out), "--hash-size", "64",
                               "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "300 rows, hash ids" in printed and f"{tsv}:11: 1 tab-separated fields" in printed
    assert "data=criteo_binary" in printed and json.loads((out / "feature_map.json").read_text())["hash_size"] == 64
    assert preprocess_command(["criteo", "--input", str(tsv), "--output", str(out), "--on-error", "error",
                               "--workers", "1", "--quiet"]) == 1
    assert f"{tsv}:11: 1 tab-separated fields, expected 40" in capsys.readouterr().err
    assert not (out / "feature_map.json").exists()  # an incomplete directory has no feature map
    assert preprocess_command(["criteo", "--input", str(tmp_path / "none.txt"), "--output", str(out)]) == 2
    assert preprocess_command(["movielens"]) == 2


def test_configs_size_tables_from_the_feature_map(tsv: Path, tmp_path: Path) -> None:
    from recframe.config.resolve import table_configs
    from recframe.training.checks import compose_config, find_problems

    fm = preprocess_criteo([str(tsv)], tmp_path / "bin", Options(vocab_threshold=2), progress=False)
    args = ["+experiment=criteo_kaggle", "data=criteo_binary", f"data.path={tmp_path / 'bin'}",
            "data.vocab_threshold=2", "tables=criteo_feature_map"]
    assert find_problems(args) == []
    sizes = [t.num_embeddings for t in table_configs(compose_config(args))]
    assert sizes == [fm["num_embeddings"][f"C{j + 1}"] for j in range(26)]
    problems = find_problems([*args[:2], f"data.path={tmp_path / 'absent'}", *args[3:]])
    assert problems[0].key == "tables.specs.t_cat_0.num_embeddings"
    assert "recframe preprocess criteo" in problems[0].message

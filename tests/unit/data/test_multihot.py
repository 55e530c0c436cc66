"""The multi-hot layout (``recframe preprocess multihot``) and the ``criteo_multihot`` source: bags made
deterministically from one-hot ids, read back exactly in contiguous batches, split over ranks, resumable,
and bad directories named with their fix. The batch-shuffled ``criteo_binary`` path reads slices too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recframe.data.arrays import EpochLoader, make_batch
from recframe.data.binary import CriteoBinarySource, TableRows, open_columns
from recframe.data.multihot import MLPERF_BAG_SIZES, CriteoMultiHotSource, open_multihot
from recframe.data.multihot_preprocess import bag_salts, multihot_bags, synthetic_blocks
from recframe.data.preprocess import Options, preprocess_command, preprocess_criteo
from recframe.data.report import DataError
from tests.unit.data.test_arrays import KEYS, write_tsv

BAGS = [1 + j % 4 for j in range(26)]  # 63 ids per sample
ROWS = [5 + 3 * j for j in range(26)]  # small tables, so that bags repeat ids


@pytest.fixture(scope="module")
def one_hot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A criteo_binary directory (vocab ids) of 200 rows."""
    tmp = tmp_path_factory.mktemp("one_hot")
    write_tsv(tmp / "train.txt", 200, seed=7)
    preprocess_criteo([str(tmp / "train.txt")], tmp / "bin", Options(vocab_threshold=2), progress=False)
    return tmp / "bin"


@pytest.fixture(scope="module")
def multi_hot(one_hot: Path) -> Path:
    out = one_hot.parent / "multihot"
    code = preprocess_command(["multihot", "--input", str(one_hot), "--output", str(out), "--bag-sizes",
                               ",".join(map(str, BAGS)), "--num-embeddings", ",".join(map(str, ROWS)),
                               "--seed", "3", "--block-rows", "64", "--quiet"])
    assert code == 0
    return out


def source(path: Path, **kwargs: object) -> CriteoMultiHotSource:
    settings = {"keys": KEYS, "batch_size": 16, "val_fraction": 0.25, "seed": 5, **kwargs}
    return CriteoMultiHotSource(str(path), **settings)  # type: ignore[arg-type]


def start_of(block: torch.Tensor, dense: np.ndarray) -> int:
    """The one row where ``block`` (a batch's dense features) starts in ``dense``."""
    size = block.shape[0]
    starts = [s for s in range(len(dense) - size + 1) if np.array_equal(dense[s:s + size], block.numpy())]
    assert len(starts) == 1, starts
    return starts[0]


def expected_bags(one_hot: Path, seed: int = 3) -> list[np.ndarray]:
    """Each feature's ``[200, bag]`` bags, from the one-hot directory and the rule, feature by feature."""
    columns, feature_map = open_columns(one_hot)
    ids = TableRows(feature_map["id_mode"], ROWS)(np.asarray(columns.ids))
    return [multihot_bags(ids[:, f], BAGS[f], ROWS[f], bag_salts(seed, f, BAGS[f])) for f in range(26)]


def test_bags_keep_the_one_hot_id_first_and_are_a_function_of_it() -> None:
    ids = np.array([0, 9, 9, 4, 99_999_999])
    bags = multihot_bags(ids, 6, 100_000_000, bag_salts(0, 2, 6))
    assert bags.dtype == np.int32 and bags.shape == (5, 6) and bags[:, 0].tolist() == ids.tolist()
    assert bags[1].tolist() == bags[2].tolist() and bags.min() >= 0 and bags.max() < 100_000_000
    assert len(set(bags[0].tolist())) == 6  # drawn anywhere in a big table: distinct
    assert not np.array_equal(bags, multihot_bags(ids, 6, 100_000_000, bag_salts(1, 2, 6)))  # another seed
    assert not np.array_equal(bags, multihot_bags(ids, 6, 100_000_000, bag_salts(0, 3, 6)))  # another feature
    assert multihot_bags(ids, 1, 10**8, bag_salts(0, 0, 1)).tolist() == ids[:, None].tolist()


def test_preprocess_then_load_gives_back_every_id_exactly(one_hot: Path, multi_hot: Path) -> None:
    expected, (columns, _) = expected_bags(one_hot), open_columns(one_hot)
    arrays = open_multihot(multi_hot)
    assert arrays.bag_sizes == BAGS and arrays.feature_map["ids_per_sample"] == sum(BAGS) == 63
    data = source(multi_hot, shuffle=False)
    batches = list(data.train_dataset(0, 1, 0)) + list(data.val_dataset(0, 1))
    assert [b.batch_size for b in batches] == [16] * 9 + [16, 16, 16, 2]  # 150 train rows: 6 dropped; 50 val
    rows = [*range(144), *range(150, 200)]
    kjt_values = {key: torch.cat([b.sparse_features[key].values() for b in batches]) for key in KEYS}
    for f, key in enumerate(KEYS):
        assert kjt_values[key].dtype == torch.int32
        np.testing.assert_array_equal(kjt_values[key].numpy(), expected[f][rows].reshape(-1))
    np.testing.assert_array_equal(torch.cat([b.dense_features for b in batches]).numpy(), columns.dense[rows])
    np.testing.assert_array_equal(torch.cat([b.labels for b in batches]).numpy(), columns.labels[rows])
    kjt = batches[-1].sparse_features
    assert kjt.lengths().tolist() == [bag for bag in BAGS for _ in range(2)]
    assert kjt.offsets().tolist() == [0, *np.cumsum(kjt.lengths().tolist()).tolist()]
    assert kjt.length_per_key() == [2 * bag for bag in BAGS]


def test_synthetic_multihot_is_deterministic(tmp_path: Path) -> None:
    args = ["multihot", "--synthetic", "100", "--bag-sizes", ",".join(map(str, BAGS)), "--num-embeddings",
            ",".join(map(str, ROWS)), "--block-rows", "40", "--quiet", "--output"]
    assert preprocess_command([*args, str(tmp_path / "a")]) == preprocess_command([*args, str(tmp_path / "b")]) == 0
    for name in ("dense.npy", "labels.npy", *(f"sparse_C{i}.npy" for i in range(1, 27))):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first = np.concatenate([b.ids for b in synthetic_blocks(100, ROWS, seed=0, zipf_exponent=1.05, block_rows=40)])
    arrays = open_multihot(tmp_path / "a")
    assert [int(a[:, 0].max()) < r for a, r in zip(arrays.sparse, ROWS, strict=True)] == [True] * 26
    np.testing.assert_array_equal(np.stack([a[:, 0] for a in arrays.sparse], axis=1), first)


def test_ranks_split_each_shuffled_batch_and_resume_where_they_stopped(multi_hot: Path) -> None:
    data = source(multi_hot, batch_size=4)  # 150 train rows, 2 ranks: 18 global batches of 8 per epoch
    dense = np.asarray(open_multihot(multi_hot).dense)

    def starts(rank: int, world: int, first_batch: int, passes: int, workers: int = 0) -> list[int]:
        loader = EpochLoader(data.train_dataset(rank, world, first_batch), batch_size=None, num_workers=workers)
        return [start_of(b.dense_features, dense) for _ in range(passes) for b in loader]

    rank0, rank1 = starts(0, 2, 0, 1), starts(1, 2, 0, 1)
    assert sorted(rank0) == list(range(0, 144, 8)) and rank0 != sorted(rank0)  # each global batch once, shuffled
    assert rank1 == [s + 4 for s in rank0]  # rank r reads rows 4r .. 4r + 3 of the global batch
    assert len(starts(0, 1, 0, 1)) == 37  # one rank, batch 4: 37 batches
    straight = starts(1, 2, 0, 3)
    assert straight[:18] != straight[18:36]  # a new order every epoch
    assert starts(1, 2, 0, 2, workers=2) == straight[:36]
    for consumed in (5, 18, 29):  # mid-epoch and at an epoch boundary
        assert starts(1, 2, consumed, 3 - consumed // 18) == straight[consumed:]
    parts = [list(data.val_dataset(r, 2)) for r in range(2)]
    assert [[b.batch_size for b in p] for p in parts] == [[4] * 6 + [1]] * 2  # 25 val rows each
    assert start_of(parts[1][0].dense_features, dense) == 175


def test_bad_directories_name_the_file_and_the_fix(one_hot: Path, multi_hot: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"one-hot criteo_binary directory; use data=criteo_binary, or .*multihot"):
        source(one_hot).setup()
    with pytest.raises(DataError, match=r"feature_map.json: not found; make it with: recframe preprocess multihot"):
        source(tmp_path).setup()
    with pytest.raises(DataError, match=r"feature_map.json: 26 sparse features .* features.sparse has 25"):
        CriteoMultiHotSource(str(multi_hot), KEYS[:25], batch_size=4).setup()
    with pytest.raises(DataError, match=r"bag sizes .* but data.ids_per_feature is"):
        source(multi_hot, bag_sizes=list(MLPERF_BAG_SIZES)).setup()
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in multi_hot.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    data = (broken / "sparse_C7.npy").read_bytes()
    (broken / "sparse_C7.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"sparse_C7.npy: cannot be read .* truncated or damaged; make it again with: "
                                        r"recframe preprocess multihot"):
        source(broken).setup()
    (broken / "sparse_C7.npy").unlink()
    with pytest.raises(DataError, match=r"sparse_C7.npy: missing from the directory"):
        source(broken).setup()


def test_preprocess_multihot_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = preprocess_command(["multihot", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                               "--bag-sizes", "1,2", "--num-embeddings", ",".join(["1"] * 26)])
    err = capsys.readouterr().err
    assert code == 2 and "--bag-sizes: 2 values; give one per sparse feature (26)" in err
    assert "--num-embeddings: each in [2, 2**31)" in err and f"--input {tmp_path}: no feature_map.json" in err


def test_config_checks_the_directory_against_features_and_tables(multi_hot: Path) -> None:
    from recframe.data.checks import data_source_problems
    from recframe.training.checks import compose_config

    base = ["+experiment=mlperf_dcnv2", "data=criteo_multihot", f"data.path={multi_hot}", "tables.row_cap=10"]
    problems = {p.key: p for p in data_source_problems(compose_config(base))}
    assert set(problems) == {"data.ids_per_feature", "tables.id_policy"}  # mlperf_dcnv2 asks for MLPerf's bags
    assert str(BAGS) in problems["data.ids_per_feature"].hint
    assert "id_policy=modulo" in problems["tables.id_policy"].hint
    fixed = [*base, f"data.ids_per_feature=[{','.join(map(str, BAGS))}]", "tables.id_policy=modulo"]
    assert data_source_problems(compose_config(fixed)) == []


def test_batch_shuffled_criteo_binary_reads_contiguous_batches(one_hot: Path) -> None:
    common = {"keys": KEYS, "table_rows": [50] * 26, "batch_size": 16, "val_fraction": 0.25, "seed": 5,
              "id_mapping": "vocab", "vocab_threshold": 2}
    data = CriteoBinarySource(str(one_hot), shuffle_batches=True, **common)
    dataset = data.train_dataset(0, 1, 0)
    dataset.begin_pass()
    columns, transform = data._columns(), data.id_transform
    starts = []
    for batch in dataset:
        start = start_of(batch.dense_features, np.asarray(columns.dense))
        expected = make_batch(columns, slice(start, start + 16), KEYS, transform)
        assert torch.equal(batch.sparse_features.values(), expected.sparse_features.values())
        assert torch.equal(batch.labels, expected.labels)
        starts.append(start)
    assert sorted(starts) == list(range(0, 144, 16)) and starts != sorted(starts)

"""Preprocessed datasets and MovieLens folders at fsspec URLs (issue 20): ``recframe preprocess`` writes to and reads
from ``memory://``, training from the URL equals training from the local directory, the local copy is made once
and made again when the dataset changes. In this process: ``memory://`` lives inside one process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from recframe import storage, storage_cache
from recframe.cli import main
from recframe.data.movielens import SPARSE_FEATURES, MovieLensSource
from recframe.data.movielens_files import detect_layout
from recframe.data.multihot import CriteoMultiHotSource
from recframe.training.checks import find_problems
from tests.in_process import train_in_process
from tests.unit.data.test_arrays import KEYS, write_tsv
from tests.unit.data.test_movielens_layouts import write_1m

pytestmark = pytest.mark.integration

QUIET = ["trainer.enable_progress_bar=false", "logger.tensorboard=false", "logger.table_stats_every_n_steps=0",
         "checkpoint.every_n_steps=0"]
SMALL = ["+experiment=criteo_kaggle", "data=criteo_binary", "data.id_mapping=modulo", "model.bottom_mlp=[16,8]",
         "model.top_mlp=[16]", "tables.embedding_dim=8", "tables.row_cap=64", "data.batch_size=64",
         "trainer.max_steps=4", "trainer.val_check_interval=4"]


@pytest.fixture
def bucket() -> Iterator[str]:
    url = f"memory://data-urls-{uuid.uuid4().hex[:8]}"
    yield url
    storage.rmtree(url)


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs copied to the local cache, in order."""
    seen: list[str] = []
    real = storage_cache._download
    monkeypatch.setattr(storage_cache, "_download", lambda url, *args: (seen.append(url), real(url, *args))[1])
    return seen


def preprocess(tsv: Path, out: str) -> None:
    assert main(["preprocess", "criteo", "--input", str(tsv), "--output", out, "--workers", "1", "--quiet"]) == 0


def train(path: str, run_dir: Path, cache: Path) -> dict:
    return train_in_process([*SMALL, f"data.path={path}", f"storage.cache_dir={cache}", *QUIET], run_dir)


def test_training_from_a_preprocessed_url_equals_training_from_the_local_directory(
        bucket: str, downloads: list[str], tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.txt", 600, seed=3)
    preprocess(tmp_path / "train.txt", str(tmp_path / "bin"))
    preprocess(tmp_path / "train.txt", f"{bucket}/bin")
    uploaded = sorted(name for name, _ in storage.children(f"{bucket}/bin"))
    assert uploaded == ["dense.npy", "feature_map.json", "labels.npy", "sparse.npy"]
    cache = tmp_path / "cache"
    local = train(str(tmp_path / "bin"), tmp_path / "local", cache)
    remote = train(f"{bucket}/bin", tmp_path / "remote", cache)
    assert remote == local and local["global_step"] == 4 and local["data/rows_train"] == 540
    assert downloads == [f"{bucket}/bin"]
    assert train(f"{bucket}/bin", tmp_path / "again", cache) == local and len(downloads) == 1, "the copy is reused"
    preprocess(tmp_path / "train.txt", f"{bucket}/bin")  # written again: a new feature_map.json
    assert train(f"{bucket}/bin", tmp_path / "changed", cache) == local and len(downloads) == 2
    (copies,) = [p for p in cache.iterdir() if p.is_dir()]
    assert len([p for p in copies.iterdir() if p.is_dir()]) == 1, "the older copy is deleted"


def test_the_checks_read_a_url_and_name_a_missing_feature_map(bucket: str) -> None:
    problems = find_problems([*SMALL, f"data.path={bucket}/nothing"])
    assert [(p.key, p.message) for p in problems] == [("data.path", f"no such file: {bucket}/nothing/feature_map.json")]


def batches(source: CriteoMultiHotSource) -> list[tuple[np.ndarray, np.ndarray]]:
    source.setup()
    return [(b.dense_features.numpy(), b.sparse_features.values().numpy())
            for b in source.val_dataset(rank=0, world_size=1)]


def test_multihot_preprocessing_reads_and_writes_urls(bucket: str, tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.txt", 200, seed=5)
    preprocess(tmp_path / "train.txt", f"{bucket}/bin")
    args = ["--bag-sizes", ",".join(["2"] * 26), "--num-embeddings", ",".join(["50"] * 26), "--quiet"]
    assert main(["preprocess", "multihot", "--input", f"{bucket}/bin", "--output", f"{bucket}/mh", *args]) == 0
    fsspec.filesystem("memory").get(f"{bucket}/bin".removeprefix("memory://"), str(tmp_path / "bin"), recursive=True)
    assert main(["preprocess", "multihot", "--input", str(tmp_path / "bin"), "--output", str(tmp_path / "mh"),
                 *args]) == 0
    settings = {"keys": KEYS, "batch_size": 16, "val_fraction": 0.25}
    remote = batches(CriteoMultiHotSource(f"{bucket}/mh", cache_dir=str(tmp_path / "cache"), **settings))
    local = batches(CriteoMultiHotSource(str(tmp_path / "mh"), **settings))
    assert len(remote) == len(local) == 4
    for (dense_a, ids_a), (dense_b, ids_b) in zip(remote, local, strict=True):
        assert np.array_equal(dense_a, dense_b) and np.array_equal(ids_a, ids_b)


def test_a_movielens_folder_at_a_url(bucket: str, tmp_path: Path) -> None:
    folder = write_1m(tmp_path / "ml-1m")
    fsspec.filesystem("memory").put(str(folder), f"{bucket}/ml-1m".removeprefix("memory://"), recursive=True)
    assert detect_layout(f"{bucket}/ml-1m") == "1m"
    settings = {"dense_names": [], "sparse_names": list(SPARSE_FEATURES), "table_rows": dict.fromkeys(SPARSE_FEATURES,
                100), "batch_size": 4, "split": "time", "val_fraction": 0.25}
    remote = MovieLensSource(f"{bucket}/ml-1m", cache_dir=str(tmp_path / "cache"), **settings)  # type: ignore[arg-type]
    local = MovieLensSource(str(folder), **settings)  # type: ignore[arg-type]
    remote.setup()
    local.setup()
    assert remote.columns is not None and local.columns is not None
    assert np.array_equal(remote.columns.ids, local.columns.ids) and remote.report() == local.report()

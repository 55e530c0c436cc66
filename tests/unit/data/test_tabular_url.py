"""Tabular data, spec files and val/test tables at an fsspec URL (issue 20, item 2) read like local files.

``memory://`` (fsspec's in-process store) stands for an object store: a CSV, a Parquet file, a libsvm file and
a feature spec copied there give the same columns as the local copies, and the config checks look the files up
through fsspec (a missing URL is a problem before anything is built).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recframe import storage
from recframe.data.spec import SpecDefaults, load_spec, spec_from_config
from recframe.data.tabular import TabularSource, read_header
from tests.shared_data import SHARED_DATA, require

DEEPCTR = SHARED_DATA / "criteo_kaggle_dac_sample" / "deepctr_200"
KEYS = [f"cat_{i}" for i in range(26)]
DENSE = [f"int_{i}" for i in range(13)]
CRITEO_COLUMNS = {**{f"int_{i}": f"I{i + 1}" for i in range(13)}, **{f"cat_{i}": f"C{i + 1}" for i in range(26)}}
SPEC = DENSE, KEYS, CRITEO_COLUMNS


@pytest.fixture
def bucket() -> Iterator[str]:
    url = f"memory://recframe-data-{uuid.uuid4().hex[:8]}"
    yield url
    storage.rmtree(url)


def upload(local: Path, url: str) -> str:
    storage.write_bytes(url, local.read_bytes())
    return url


def columns(path: str, **kwargs: object) -> TabularSource:
    source = TabularSource(path, spec_from_config(*SPEC, SpecDefaults()), {k: 1000 for k in KEYS}, batch_size=50,
                           val_fraction=0.2, **kwargs)  # type: ignore[arg-type]
    source.setup()
    return source


def assert_same(a: TabularSource, b: TabularSource) -> None:
    for name in ("dense", "labels", "ids"):
        np.testing.assert_array_equal(getattr(a.columns, name), getattr(b.columns, name))
    assert a.report() == b.report()


def test_a_csv_and_its_val_and_test_tables_at_a_url_read_like_local_files(bucket: str) -> None:
    local = require(DEEPCTR / "criteo_sample.txt")
    url = upload(local, f"{bucket}/train.csv")
    assert read_header(url) == read_header(str(local))
    assert_same(columns(url), columns(str(local)))
    split = {"val_path": upload(local, f"{bucket}/val.csv"), "test_path": upload(local, f"{bucket}/test.csv")}
    assert_same(columns(url, **split), columns(str(local), val_path=str(local), test_path=str(local)))


def test_parquet_and_libsvm_at_a_url(bucket: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow.csv

    local = tmp_path / "t.parquet"
    pq.write_table(pyarrow.csv.read_csv(require(DEEPCTR / "criteo_sample.txt"),
                                        convert_options=pyarrow.csv.ConvertOptions(
                                            column_types={c: pyarrow.string() for c in CRITEO_COLUMNS.values()})),
                   local)
    url = upload(local, f"{bucket}/t.parquet")
    assert read_header(url) == read_header(str(local))
    assert_same(columns(url), columns(str(local)))
    svm = tmp_path / "t.svm"
    svm.write_text("1 a:1:1 n:0:2.5\n0 a:2:1 n:0:1\n1 a:1:1\n0 a:3:1 n:0:4\n")
    spec = spec_from_config(["n"], ["a"], {}, SpecDefaults())
    here, there = (TabularSource(p, spec, {"a": 10}, batch_size=1, val_fraction=0.5)
                   for p in (str(svm), upload(svm, f"{bucket}/t.svm")))
    here.setup()
    there.setup()
    np.testing.assert_array_equal(here.columns.dense, there.columns.dense)
    np.testing.assert_array_equal(here.columns.ids, there.columns.ids)


def test_a_spec_file_at_a_url(bucket: str, tmp_path: Path) -> None:
    text = "label: label\ndense:\n  x: {}\ncategorical:\n  c: {dtype: string}\n"
    (tmp_path / "spec.yaml").write_text(text)
    url = upload(tmp_path / "spec.yaml", f"{bucket}/spec.yaml")
    assert load_spec(url, SpecDefaults()) == load_spec(tmp_path / "spec.yaml", SpecDefaults())
    from recframe.data.report import DataError

    with pytest.raises(DataError, match="no such file"):
        load_spec(f"{bucket}/missing.yaml", SpecDefaults())


def test_config_checks_look_urls_up_through_fsspec(bucket: str) -> None:
    from recframe.training.checks import check_config, compose_config

    local = require(DEEPCTR / "criteo_sample.txt")
    mapping = [f"+data.columns.{feature}={column}" for feature, column in CRITEO_COLUMNS.items()]
    args = ["+experiment=dlrm", "data=tabular", *mapping, "tables.num_embeddings=100"]
    url = upload(local, f"{bucket}/train.csv")
    assert check_config(compose_config([*args, f"data.path={url}", f"data.val_path={url}"])) == []
    problems = check_config(compose_config([*args, f"data.path={bucket}/nope.csv", f"data.test_path={bucket}/x.csv"]))
    assert {p.key for p in problems} >= {"data.path", "data.test_path"}
    assert all("no such file" in p.message for p in problems if p.key in ("data.path", "data.test_path"))
    missing_store = check_config(compose_config([*args, "data.path=nosuchscheme://b/t.csv"]))
    assert "cannot open nosuchscheme:// URLs" in missing_store[0].message

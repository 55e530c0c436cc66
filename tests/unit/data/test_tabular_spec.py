"""Feature spec files and Parquet input of the tabular kind: a spec with hex categoricals reads a Criteo CSV
into exactly the Criteo reader's ids, Parquet reads like CSV (nulls, list columns, malformed rows), a
missing pyarrow names the extra, and spec mistakes name the file and the key."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from recframe.data.report import DataError
from recframe.data.sources import CriteoTsvSource
from recframe.data.spec import SpecDefaults, feature_spec_value, load_spec
from recframe.data.tabular import TabularSource, read_header
from tests.shared_data import SHARED_DATA, require

REPO = Path(__file__).resolve().parents[3]
CRITEO_SPEC = REPO / "recipes" / "criteo" / "criteo_spec.yaml"
DEEPCTR = SHARED_DATA / "criteo_kaggle_dac_sample" / "deepctr_200"
KEYS = [f"cat_{i}" for i in range(26)]


def criteo_as_parquet(csv_path: Path, out: Path) -> Path:
    """The DeepCTR Criteo CSV as typed Parquet: int label, float I*, string C*; empty fields are nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {"label": pa.array([int(r["label"]) for r in rows], pa.int64())}
    for name in rows[0]:
        if name.startswith("I"):
            columns[name] = pa.array([float(r[name]) if r[name] else None for r in rows], pa.float64())
        elif name.startswith("C"):
            columns[name] = pa.array([r[name] or None for r in rows], pa.string())
    pq.write_table(pa.table(columns), out)
    return out


@pytest.mark.parametrize("mapping", ["modulo", "vocab"])
def test_hex_spec_gives_the_criteo_readers_ids(mapping: str) -> None:
    csv_path, tsv_path = require(DEEPCTR / "criteo_sample.txt"), require(DEEPCTR / "criteo_sample.tsv")
    spec = load_spec(CRITEO_SPEC, SpecDefaults(id_mapping=mapping, vocab_threshold=2))
    table = TabularSource(str(csv_path), spec, {k: 50 for k in KEYS}, batch_size=50, val_fraction=0.2)
    tsv = CriteoTsvSource(str(tsv_path), KEYS, [50] * 26, batch_size=50, val_fraction=0.2, id_mapping=mapping,
                          vocab_threshold=2)
    table.setup()
    tsv.setup()
    np.testing.assert_array_equal(table.columns.ids, tsv.columns.ids)
    np.testing.assert_array_equal(table.columns.dense, tsv.columns.dense)
    np.testing.assert_array_equal(table.columns.labels, tsv.columns.labels)
    assert table.keys == KEYS and table.report()["data/rows_train"] == tsv.report()["data/rows_train"] == 160


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    csv_path = require(DEEPCTR / "criteo_sample.txt")
    parquet = criteo_as_parquet(csv_path, tmp_path / "criteo.parquet")
    spec = load_spec(CRITEO_SPEC, SpecDefaults(id_mapping="vocab"))
    sources = [TabularSource(str(p), spec, {k: 100 for k in KEYS}, batch_size=50) for p in (csv_path, parquet)]
    for source in sources:
        source.setup()
    a, b = (s.columns for s in sources)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert read_header(parquet)[:3] == ["label", "I1", "I2"]


def test_parquet_lists_are_bags_and_bad_rows_are_counted(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.pq"
    pq.write_table(pa.table({
        "y": pa.array([1, None, 0, 1, 0, 1]),
        "x": pa.array([1.5, 2.0, float("nan"), 3.0, None, 4.0]),
        "tags": pa.array([["a", "b"], ["a"], ["c"], [], None, ["b", "c", "d"]]),
        "code": pa.array(["1f", "2", "3", "zz", "4", "ff"]),
    }), path)
    spec = load_spec(write(tmp_path / "s.yaml", "label: y\ndense: {x: {transform: none}}\n"
                                                "categorical: {tags: {}, code: {dtype: hex, rows: 1000}}\n"),
                     SpecDefaults())
    source = TabularSource(str(path), spec, {"tags": 100, "code": 1000}, batch_size=1, val_fraction=0.34)
    source.setup()
    assert source.skipped.counts["bad_label"] == 1 and source.skipped.counts["bad_dense"] == 1
    assert source.skipped.counts["bad_categorical"] == 1
    assert source.skipped.examples["bad_categorical"] == [f"{path}: row 4: column code: 'zz' is not a hex value"]
    assert source.skipped.examples["bad_label"] == [f"{path}: row 2: column y: '' is not a label (0 or 1)"]
    assert source.columns.dense[:, 0].tolist() == [1.5, 0.0, 4.0]  # null dense: 0
    assert (source.columns.ids[:, 0] >= 0).sum(axis=1).tolist() == [2, 1, 3]  # the null bag is one missing id
    assert source.columns.ids[1, 0, 0] == 0
    assert source.columns.ids[:, 1, 0].tolist() == [1 + 0x1F % 999, 1 + 4 % 999, 1 + 0xFF % 999]
    with pytest.raises(DataError, match=rf"{path}: row 2: column y: '' is not a label"):
        TabularSource(str(path), spec, {"tags": 100, "code": 1000}, batch_size=1, on_error="error").setup()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'recframe\[parquet\]'"):
        read_header(tmp_path / "t.parquet")


def test_spec_settings_default_to_the_data_config_and_mistakes_name_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "dense: {a: {}}\ncategorical: {b: {column: B, mapping: vocab}, c: {}}\n")
    spec = load_spec(path, SpecDefaults(label="click", id_mapping="modulo", multi_value_separator="|"))
    assert spec.label == "click" and spec.dense[0].transform == "log1p"
    assert [(s.column, s.mapping, s.separator) for s in spec.sparse] == [("B", "vocab", "|"), ("c", "modulo", "|")]
    assert feature_spec_value(str(path), "sparse") == ["b", "c"]
    tables = feature_spec_value(str(path), "tables")
    assert list(tables) == ["t_b", "t_c"] and tables.t_b.features == ["b"] and tables.t_b.num_embeddings is None
    with pytest.raises(DataError, match=rf"feature spec {path}: .*colum"):
        load_spec(write(path, "dense: {a: {colum: A}}\n"), SpecDefaults())
    with pytest.raises(DataError, match=r"categorical.b.dtype: 'float' is not one of \['string', 'int', 'hex'\]"):
        load_spec(write(path, "categorical: {b: {dtype: float}}\n"), SpecDefaults())
    with pytest.raises(DataError, match="no such file"):
        load_spec(tmp_path / "absent.yaml", SpecDefaults())
    with pytest.raises(DataError, match="data.spec is not set"):
        feature_spec_value(None, "dense")


def test_tabular_experiment_takes_features_and_tables_from_the_spec(tmp_path: Path) -> None:
    from recframe.config.resolve import table_configs
    from recframe.training.builders import build_datamodule
    from recframe.training.checks import check_config, compose_config, find_problems

    csv_path = require(DEEPCTR / "criteo_sample.txt")
    args = ["+experiment=tabular", f"data.path={csv_path}", f"data.spec={CRITEO_SPEC}", "data.val_fraction=0.25"]
    cfg = compose_config(args)
    assert check_config(cfg) == []
    assert list(cfg.features.sparse) == KEYS and len(cfg.features.dense) == 13
    assert [t.name for t in table_configs(cfg)][:2] == ["t_cat_0", "t_cat_1"]
    source = build_datamodule(cfg).source
    source.setup()
    assert source.report()["data/rows_train"] == 150
    unset = find_problems(["+experiment=tabular", f"data.path={csv_path}"])
    assert len(unset) == 1 and "data.spec is not set: give the feature spec YAML file of the table, data.spec=FILE " \
        "(see recframe/data/spec.py) (read by features.sparse, tables.specs too)" in unset[0].message  # once
    problems = find_problems([*args, "features=criteo", "tables=criteo_kaggle"])
    assert problems == []  # the same names as the spec's: fine
    bad = write(tmp_path / "s.yaml", CRITEO_SPEC.read_text().replace("column: C26", "column: C27"))
    problems = find_problems([*args[:2], f"data.spec={bad}"])
    assert problems[0].key == "data.spec" and "has no columns ['C27']" in problems[0].message

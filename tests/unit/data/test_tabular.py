"""The tabular reader: CSV and Parquet give the same columns, the same values (and with hex dtype the same
ids) as the Criteo TSV reader on the same rows, multi-valued fields as bags, malformed rows counted or
stopped at, feature spec files and the config's feature spec checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recframe.data.report import DataError
from recframe.data.sources import CriteoTsvSource
from recframe.data.spec import SpecDefaults, load_spec, spec_from_config
from recframe.data.tabular import TabularSource, stable_hash
from tests.shared_data import SHARED_DATA, require

DEEPCTR = SHARED_DATA / "criteo_kaggle_dac_sample" / "deepctr_200"
ML1M = SHARED_DATA / "movielens_1m_deepctr_sample" / "movielens_sample.txt"
KEYS = [f"cat_{i}" for i in range(26)]
DENSE = [f"int_{i}" for i in range(13)]
CRITEO_COLUMNS = {**{f"int_{i}": f"I{i + 1}" for i in range(13)}, **{f"cat_{i}": f"C{i + 1}" for i in range(26)}}


def test_criteo_csv_reads_like_the_criteo_tsv_of_the_same_rows() -> None:
    csv_path, tsv_path = require(DEEPCTR / "criteo_sample.txt"), require(DEEPCTR / "criteo_sample.tsv")
    spec = spec_from_config(DENSE, KEYS, CRITEO_COLUMNS, SpecDefaults())
    table = TabularSource(str(csv_path), spec, {k: 1000 for k in KEYS}, batch_size=50, val_fraction=0.2)
    tsv = CriteoTsvSource(str(tsv_path), KEYS, [1000] * 26, batch_size=50, val_fraction=0.2)
    table.setup()
    tsv.setup()
    np.testing.assert_array_equal(table.columns.dense, tsv.columns.dense)  # "260.0" and "260" alike
    np.testing.assert_array_equal(table.columns.labels, tsv.columns.labels)
    np.testing.assert_array_equal(table.columns.ids == 0, tsv.columns.ids == 0)  # missing fields: row 0
    assert table.report()["data/rows_val"] == 40 and table.report()["data/skipped_lines"] == 0


def test_multi_valued_fields_become_bags_and_ratings_become_labels() -> None:
    path = require(ML1M)
    spec = spec_from_config(["age"], ["user_id", "genres", "gender"], {},
                            SpecDefaults(label="rating", positive_threshold=4, multi_value_separator="|",
                                         id_mapping="vocab", dense_transform="none"))
    source = TabularSource(str(path), spec, {"user_id": 500, "genres": 40, "gender": 4}, batch_size=100,
                           val_fraction=0.5, shuffle=False)
    source.setup()
    lines = path.read_text().splitlines()[1:]
    genres = [line.split(",")[-5] for line in lines]
    ratings = [int(line.split(",")[2]) for line in lines]
    batch = next(iter(source.train_dataset(rank=0, world_size=1, first_batch=0)))
    assert batch.sparse_features["genres"].lengths().tolist() == [len(g.split("|")) for g in genres[:100]]
    assert batch.labels.tolist() == [float(r >= 4) for r in ratings[:100]]
    assert batch.dense_features[:3, 0].tolist() == [float(line.split(",")[-3]) for line in lines[:3]]  # age
    assert int(batch.sparse_features["gender"].values().max()) <= 3


def test_malformed_rows_are_counted_or_stop_the_run(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('label,x,c\n1,2.5,"a,b"\n0,abc,z\n1,3\n2,1,z\n0,nan,q\n1,1,z,extra\n0,,\n')
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    source = TabularSource(str(path), spec, {"c": 10}, batch_size=1, val_fraction=0.5)
    source.setup()
    assert len(source.columns) == 2 and source.columns.dense[:, 0].tolist() == pytest.approx([np.log1p(2.5), 0.0])
    assert source.skipped.counts == {"short_row": 1, "long_row": 1, "unclosed_quote": 0, "bad_encoding": 0,
                                     "huge_field": 0, "bad_label": 1, "bad_dense": 2, "bad_categorical": 0,
                                     "long_bag": 0, "truncated": 0, "bad_entry": 0}
    assert source.skipped.examples["bad_dense"][0] == f"{path}:3: column x: 'abc' is not a finite number"
    assert source.columns.ids[:, 0].tolist() == [1 + stable_hash("a,b") % 9, 0]  # quoted comma; empty = missing
    with pytest.raises(DataError, match=rf"{path}:3: column x: 'abc' is not a finite number; fix or remove"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()
    with pytest.raises(DataError, match=r"the table has no columns \['y'\]"):
        TabularSource(str(path), spec_from_config(["y"], [], {}, SpecDefaults()), {}, batch_size=1).setup()


def test_an_unclosed_quote_is_counted_and_the_rows_after_it_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    good = "".join(f"1,{i},a{i}\n" for i in range(10))  # lines 4-13
    # line 14's quote closes the stray one (row 3-14); read again, lines 14-15 are a row with a quoted newline
    path.write_text('label,x,c\n1,1,a\n1,"oops,a\n' + good + '0,2,"two\nlines"\n')
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    source = TabularSource(str(path), spec, {"c": 10}, batch_size=1, val_fraction=0.0)
    source.setup()
    assert len(source.columns) == 12 and source.skipped.total == 1
    assert source.skipped.examples["unclosed_quote"] == [
        f"{path}:3-14: a quoted field is not closed (the row ran on to line 14); lines 4-14 were read again: "
        "close or remove the quote"]
    assert source.columns.ids[-1, 0] == 1 + stable_hash("two\nlines") % 9  # a closed quote may span lines
    with pytest.raises(DataError, match=rf"{path}:3-14: a quoted field is not closed"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()


def test_blank_lines_are_ignored_and_bad_bytes_or_huge_fields_name_their_line(tmp_path: Path) -> None:
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    good = "".join(f"1,{i},a{i}\n" for i in range(4)).encode()  # lines 2-5
    cases = {"blank": (b"\n" + good + b"\n\n", None, ""),
             "latin1": (good + b"1,2,caf\xe9\n", "bad_encoding",
                        ":6: byte 0xe9 at column 8 is not UTF-8: save the file as UTF-8"),
             "huge": (good + b"1,2," + b"a" * 200_000 + b"\n", "huge_field", ":6: field larger than field limit")}
    for name, (body, kind, message) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(b"label,x,c\n" + body)
        source = TabularSource(str(path), spec, {"c": 10}, batch_size=1, val_fraction=0.0)
        source.setup()
        assert len(source.columns) == 4 and source.skipped.total == (kind is not None), name
        strict = TabularSource(str(path), spec, {"c": 10}, batch_size=1, val_fraction=0.0, on_error="error")
        if kind is None:
            strict.setup()
            continue
        assert source.skipped.counts[kind] == 1 and source.skipped.examples[kind][0].startswith(f"{path}{message}")
        with pytest.raises(DataError, match=rf"^{path}{message}"):
            strict.setup()
    (tmp_path / "h.csv").write_bytes(b"label,x,caf\xe9\n1,2,a\n")
    with pytest.raises(DataError, match=r"h.csv:1: byte 0xe9 at column 12 is not UTF-8: .* \(the header\)"):
        TabularSource(str(tmp_path / "h.csv"), spec, {"c": 10}, batch_size=1).setup()


def test_a_bag_longer_than_max_values_is_a_counted_malformed_row_not_a_wider_table(tmp_path: Path) -> None:
    path, spec_path = tmp_path / "t.csv", tmp_path / "spec.yaml"
    rows = [f"1,{i},t1|t2" for i in range(20)]
    rows[7] = "1,7," + "|".join(f"g{i}" for i in range(5000))
    path.write_text("label,x,tags\n" + "\n".join(rows) + "\n")
    spec_path.write_text('dense: {x: {}}\ncategorical: {tags: {separator: "|", max_values: 3}}\n')
    spec = load_spec(spec_path, SpecDefaults())
    source = TabularSource(str(path), spec, {"tags": 100}, batch_size=4, val_fraction=0.0)
    source.setup()
    assert source.columns.ids.shape == (19, 1, 2) and source.skipped.counts["long_bag"] == 1
    assert source.skipped.examples["long_bag"] == [
        f"{path}:9: column tags: 5000 values, more than max_values=3: raise categorical.tags.max_values in the "
        "feature spec"]
    assert spec_from_config([], ["tags"], {}, SpecDefaults()).sparse[0].max_values == 64  # the default
    with pytest.raises(DataError, match=rf"{path}:9: column tags: 5000 values, more than max_values=3"):
        TabularSource(str(path), spec, {"tags": 100}, batch_size=4, on_error="error").setup()


def test_config_names_columns_and_builds() -> None:
    from recframe.training.builders import build_datamodule
    from recframe.training.checks import check_config, compose_config, find_problems

    mapping = [f"+data.columns.{feature}={column}" for feature, column in CRITEO_COLUMNS.items()]
    args = ["+experiment=dlrm", "data=tabular", f"data.path={require(DEEPCTR / 'criteo_sample.txt')}", *mapping,
            "data.val_fraction=0.25", "tables.num_embeddings=100"]
    cfg = compose_config(args)
    assert check_config(cfg) == []
    source = build_datamodule(cfg).source
    source.setup()
    assert source.report()["data/rows_train"] == 150
    problems = find_problems([*args, "data.label=click"])
    assert problems[0].key == "data.label" and "has no columns ['click']" in problems[0].message
    assert "data.columns.<feature>=<column>" in problems[0].hint and "'C26'" in problems[0].hint


def test_a_csv_row_on_a_last_line_without_newline_is_truncated(tmp_path: Path) -> None:
    import dataclasses

    path = tmp_path / "t.csv"
    path.write_text("label,x,c\n1,2,16edf87e\n0,1,16edf")  # the last id cut: '16edf' still looks like an id
    spec = spec_from_config(["x"], ["c"], {}, SpecDefaults())
    spec = dataclasses.replace(spec, sparse=(dataclasses.replace(spec.sparse[0], dtype="hex"),))
    source = TabularSource(str(path), spec, {"c": 1 << 30}, batch_size=1, val_fraction=0.0)
    source.setup()
    assert len(source.columns) == 1 and source.report()["data/skipped_truncated"] == 1
    assert f"{path}:3: the last line has no line end" in source.summary()
    with pytest.raises(DataError, match=r"t.csv:3: the last line has no line end.*end it with a newline"):
        TabularSource(str(path), spec, {"c": 10}, batch_size=1, on_error="error").setup()
    path.write_text('label,x,c\n1,2,"a\nb"')  # a quoted field over two lines, the second one cut
    source = TabularSource(str(path), spec_from_config(["x"], ["c"], {}, SpecDefaults()), {"c": 10}, batch_size=1)
    with pytest.raises(DataError, match="no valid rows"):
        source.setup()
    assert source.skipped.counts["truncated"] == 1


def test_a_byte_order_mark_is_dropped_from_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefflabel,x,c\n1,2,a\n0,3,b\n".encode())  # a spreadsheet's UTF-8 export
    source = TabularSource(str(path), spec_from_config(["x"], ["c"], {}, SpecDefaults()), {"c": 10}, batch_size=1,
                           val_fraction=0.0)
    source.setup()
    assert source.columns.labels.tolist() == [1.0, 0.0] and source.report()["data/skipped_lines"] == 0


def test_dense_values_are_checked_after_the_cast_to_float32(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("label,x,c\n1,1e39,a\n0,-1e300,b\n1,3e38,c\n0,1e300,d\n")
    raw = spec_from_config(["x"], ["c"], {}, SpecDefaults(dense_transform="none"))
    source = TabularSource(str(path), raw, {"c": 10}, batch_size=1, val_fraction=0.0)
    source.setup()  # 1e39 and -1e300 are finite float64s but float32's infinities
    assert source.report()["data/skipped_bad_dense"] == 3 and source.columns.dense[:, 0].tolist() == [np.float32(3e38)]
    assert np.isfinite(source.columns.dense).all()
    assert "column x: '1e39' is beyond float32, the training dtype" in source.summary()
    with pytest.raises(DataError, match=r"t.csv:2: column x: '1e39' is beyond float32"):
        TabularSource(str(path), raw, {"c": 10}, batch_size=1, on_error="error").setup()
    logged = TabularSource(str(path), spec_from_config(["x"], ["c"], {}, SpecDefaults(dense_transform="log1p")),
                           {"c": 10}, batch_size=1, val_fraction=0.0)
    logged.setup()  # log(1 + 1e39) is a float32
    assert len(logged.columns) == 4 and np.isfinite(logged.columns.dense).all()

"""libsvm input of the tabular source (``data.format=libsvm``, issue 16 item 4): ``label field:id:value`` and
``label key:value`` lines give the labels, dense values and ids of a plain-Python reference parser, malformed
lines are counted per kind and named file:line (or stop the run at the first), the same table as CSV and as
libsvm gives the same columns, validation files and vocabularies work as with CSV, and train_job trains a few
steps from libsvm files."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from recframe.data.report import DataError
from recframe.data.spec import SpecDefaults, load_spec
from recframe.data.tabular import KINDS, TabularSource, stable_hash, table_format
from recframe.training.app import train_job
from recframe.training.checks import check_config, compose_config, find_problems

ROWS = {"user": 97, "tags": 31, "site": 53}
SPEC = """label: click
dense:
  price: {column: "3", transform: none}
categorical:
  user: {column: "0"}
  tags: {column: "1", dtype: int}
  site: {column: site, dtype: hex}
"""
BAD = {  # a malformed line of each kind the reader or the parser finds, and the kind it counts under
    "bad_entry": ["1 0:u1:1 nocolon", "0 0:u1:1 3:1.0 3:2.0", "1 0::1", "1 0:a:b:c"],
    "bad_label": ["x 0:u2:1", "2 0:u2:1", "-1 0:u3:1"],
    "bad_dense": ["1 3:abc", "0 3:nan", "1 3:1e39"],
    "bad_categorical": ["1 1:q:1", "0 site:zz"],
}


def reference(lines: list[bytes]) -> tuple[list[tuple[float, float, list[list[int]]]], dict[str, list[int]]]:
    """Plain Python: each kept line's (label, price, rows of user, tags and site) and the bad lines per kind."""
    kept, bad = [], {k: [] for k in KINDS}
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            bad["bad_encoding"].append(number)
            continue
        tokens = text.split("#")[0].split()
        if not tokens:
            continue
        if not raw.endswith(b"\n"):
            bad["truncated"].append(number)
            continue
        fields: dict[str, list[tuple[str, str]]] = {}
        entry_ok = True
        for token in tokens[1:]:
            parts = token.split(":")
            if len(parts) not in (2, 3) or "" in parts:
                entry_ok = False
                break
            fields.setdefault(parts[0], []).append((parts[1], parts[-1]))
        if not entry_ok or len(fields.get("3", [])) > 1:
            bad["bad_entry"].append(number)
            continue
        if tokens[0] not in ("0", "1", "0.0", "1.0"):
            bad["bad_label"].append(number)
            continue
        try:
            price = float(fields["3"][0][1]) if "3" in fields else 0.0
        except ValueError:
            price = math.nan
        if not math.isfinite(price) or abs(price) > 3.4e38:
            bad["bad_dense"].append(number)
            continue
        try:
            user = [stable_hash(i) for i, _ in fields.get("0", [])]
            tags = [int(i) for i, _ in fields.get("1", [])]
            site = [int(i, 16) for i, _ in fields.get("site", [])]
        except ValueError:
            bad["bad_categorical"].append(number)
            continue
        bags = [[1 + v % (ROWS["user"] - 1) for v in user], [1 + v % (ROWS["tags"] - 1) for v in tags],
                [1 + v % (ROWS["site"] - 1) for v in site]]
        kept.append((float(tokens[0]), price, [bag or [0] for bag in bags]))  # no value: row 0 (missing)
    return kept, bad


def random_lines(rng: random.Random, n: int) -> list[bytes]:
    """n libsvm lines of random entries in random order, the malformed ones among them."""
    lines = []
    for _ in range(n):
        entries = []
        if rng.random() < 0.9:
            entries.append(f"0:u{rng.randrange(40)}:1")
        entries += [f"1:{rng.randrange(20)}:{rng.choice(['1', '0.5'])}" for _ in range(rng.randrange(4))]
        if rng.random() < 0.7:
            entries.append(f"3:{rng.uniform(-5, 5):.3f}")
        if rng.random() < 0.8:
            entries.append(f"site:{rng.randrange(1 << 20):x}")
        entries.append("9:7:1")  # a field no feature reads
        rng.shuffle(entries)
        comment = " # a comment" if rng.random() < 0.1 else ""
        lines.append(f"{rng.choice(['0', '1'])}{rng.choice([' ', chr(9)])}{' '.join(entries)}{comment}\n".encode())
    for bad in BAD.values():
        for text in bad:
            lines.insert(rng.randrange(len(lines)), f"{text}\n".encode())
    lines.insert(rng.randrange(len(lines)), b"1 0:\xff\xfe:1\n")  # not UTF-8
    lines.insert(rng.randrange(len(lines)), b"\n")  # blank
    lines.append(b"1 0:u1:1 3:2.5")  # the last line without its newline: perhaps cut
    return lines


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_libsvm_reads_like_a_plain_python_reference(tmp_path: Path, seed: int) -> None:
    lines = random_lines(random.Random(seed), 300)
    path = tmp_path / "t.libsvm"
    path.write_bytes(b"".join(lines))
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.yaml", SpecDefaults())
    source = TabularSource(str(path), spec, ROWS, batch_size=8, val_fraction=0.0)
    source.setup()
    kept, bad = reference(lines)
    assert source.skipped.counts == {k: len(bad[k]) for k in KINDS}
    assert all(len(bad[k]) for k in ["bad_entry", "bad_label", "bad_dense", "bad_categorical", "bad_encoding",
                                     "truncated"])
    for kind, numbers in bad.items():  # the first ones of each kind, named file:line
        assert [m.split(": ", 1)[0] for m in source.skipped.examples[kind]] == [f"{path}:{n}" for n in numbers[:5]]
    columns = source.columns
    assert columns.labels.tolist() == [k[0] for k in kept]
    np.testing.assert_array_equal(columns.dense[:, 0], np.array([k[1] for k in kept], np.float32))
    width = max(len(bag) for k in kept for bag in k[2])
    assert width > 1 and columns.ids.shape == (len(kept), 3, width)
    expected = [[[*bag, *[-1] * (width - len(bag))] for bag in k[2]] for k in kept]
    assert columns.ids.tolist() == expected
    first = min(n for numbers in bad.values() for n in numbers)
    with pytest.raises(DataError, match=rf"{path}:{first}: .*set data.on_error=skip"):
        TabularSource(str(path), spec, ROWS, batch_size=8, on_error="error").setup()


def test_the_same_table_as_csv_and_as_libsvm_gives_the_same_columns(tmp_path: Path) -> None:
    rng = random.Random(3)
    csv_rows, libsvm_rows = ["click,price,user,tags"], []
    for _ in range(200):
        click, price, user = rng.choice("01"), f"{rng.uniform(0, 9):.2f}", f"u{rng.randrange(30)}"
        tags = [str(rng.randrange(12)) for _ in range(rng.randrange(3))]
        csv_rows.append(f"{click},{price},{user},{'|'.join(tags)}")
        libsvm_rows.append(" ".join([click, f"price:{price}", f"user:{user}", *(f"tags:{t}:1" for t in tags)]))
    (tmp_path / "t.csv").write_text("\n".join(csv_rows) + "\n")
    (tmp_path / "t.svm").write_text("\n".join(libsvm_rows) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(libsvm_rows) + "\n")
    text = ("label: click\ndense: {price: {}}\ncategorical: {user: {mapping: vocab, rows: 40}, "
            "tags: {dtype: int, separator: '|', rows: 16}}\n")
    (tmp_path / "spec.yaml").write_text(text)
    spec = load_spec(tmp_path / "spec.yaml", SpecDefaults())
    tables = []
    for name, fmt in (("t.csv", "auto"), ("t.svm", "auto"), ("t.txt", "libsvm")):
        source = TabularSource(str(tmp_path / name), spec, {"user": 40, "tags": 16}, batch_size=16, shuffle=False,
                               fmt=fmt)
        source.setup()
        tables.append(source.columns)
    assert table_format(tmp_path / "t.svm") == "libsvm" and table_format("a.libsvm") == table_format("b.ffm")
    for field in ("labels", "dense", "ids"):
        for other in tables[1:]:
            np.testing.assert_array_equal(getattr(tables[0], field), getattr(other, field))


def test_validation_files_vocabularies_and_one_label(tmp_path: Path) -> None:
    (tmp_path / "train.libsvm").write_text("1 0:a:1\n1 0:a:1\n0 0:b:1\n")
    (tmp_path / "val.libsvm").write_text("1 0:c:1\n0 0:a:1 0:b:1 # a bag\n")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("label: y\ncategorical: {c: {column: '0', mapping: vocab, rows: 10}}\n")
    source = TabularSource(str(tmp_path / "train.libsvm"), load_spec(spec_path, SpecDefaults()), {"c": 10},
                           batch_size=2, val_path=str(tmp_path / "val.libsvm"), shuffle=False)
    source.setup()  # the vocabulary counts the training file only: a row 2, b row 3, c out of vocabulary (1)
    assert source.columns.ids[:, 0].tolist() == [[2, -1], [2, -1], [3, -1]]
    assert source.val_columns.ids[:, 0].tolist() == [[1, -1], [2, 3]]
    assert source.report()["data/rows_val"] == 2
    spec_path.write_text("label: [y, z]\ncategorical: {c: {column: '0'}}\n")
    with pytest.raises(DataError, match="a libsvm line has one label"):
        TabularSource(str(tmp_path / "train.libsvm"), load_spec(spec_path, SpecDefaults()), {"c": 10},
                      batch_size=2).setup()
    spec_path.write_text("label: y\ndense: {x: {column: '0'}}\ncategorical: {c: {column: '0'}}\n")
    with pytest.raises(DataError, match=r"libsvm columns \['0'\] are read as dense and as categorical"):
        TabularSource(str(tmp_path / "train.libsvm"), load_spec(spec_path, SpecDefaults()), {"c": 10},
                      batch_size=2).setup()
    spec_path.write_text("label: y\ncategorical: {c: {column: '7'}}\n")
    with pytest.raises(DataError, match=r"the table has no columns \['7'\]; it has \['y', '0'\]"):
        TabularSource(str(tmp_path / "train.libsvm"), load_spec(spec_path, SpecDefaults()), {"c": 10},
                      batch_size=2).setup()
    spec_path.write_text("label: [y, z]\ncategorical: {c: {column: '0'}}\n")
    problems = find_problems(["+experiment=tabular", f"data.path={tmp_path / 'train.libsvm'}",
                              f"data.spec={spec_path}"])
    assert any(p.key == "data.spec" and "a libsvm line has one label" in p.message for p in problems), problems


def test_train_job_trains_from_libsvm_files(tmp_path: Path) -> None:
    rng = random.Random(0)
    for name, n in (("train", 240), ("val", 80)):
        lines = []
        for _ in range(n):
            user, item = rng.randrange(30), rng.randrange(20)
            click = int(rng.random() < 0.2 + 0.5 * (user % 3 == 0))
            lines.append(f"{click} 0:{user}:1 1:{item}:1 2:{rng.random() * 9:.2f}")
        (tmp_path / f"{name}.ffm").write_text("\n".join(lines) + "\n")
    (tmp_path / "spec.yaml").write_text("label: click\ndense: {price: {column: '2'}}\n"
                                        "categorical: {user: {column: '0', dtype: int, rows: 40}, "
                                        "item: {column: '1', dtype: int, rows: 30}}\n")
    cfg = compose_config(["+experiment=tabular", f"data.path={tmp_path / 'train.ffm'}",
                          f"data.val_path={tmp_path / 'val.ffm'}", f"data.spec={tmp_path / 'spec.yaml'}",
                          f"run_dir={tmp_path / 'run'}", "trainer.max_steps=4", "data.batch_size=32",
                          "trainer.enable_progress_bar=false", "logger.tensorboard=false",
                          "logger.table_stats_every_n_steps=0"])
    assert check_config(cfg) == []
    train_job(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and math.isfinite(metrics["val/auc"])
    assert metrics["data/rows_train"] == 240 and metrics["data/rows_val"] == 80

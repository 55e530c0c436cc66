"""Criteo TSV parsing: equal to a plain-Python reference on random good and bad lines, chunk
boundaries, the error policy, and the real Kaggle sample's published statistics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from recframe.data.criteo import KINDS, dense_transform, iter_line_chunks, parse_criteo_bytes, read_criteo_tsv
from recframe.data.report import DataError
from tests.shared_data import KAGGLE_SAMPLE, KAGGLE_TEST_SAMPLE, require

DEC = re.compile(r"[+-]?[0-9]{1,18}")
HEX = re.compile(r"[0-9a-fA-F]{1,16}")


def reference(data: bytes, has_label: bool = True, pad: bool = False) -> tuple[list, dict[str, list[tuple]]]:
    """Plain-Python reading of the format: (good rows as tuples, {kind: [(line, field name, text)]})."""
    text = data.decode("latin-1").removeprefix("\xef\xbb\xbf")  # a UTF-8 byte-order mark, read as latin-1
    lines = text.split("\n") if text else []  # an empty file has no line
    if text.endswith("\n"):
        lines = lines[:-1]
    cut = len(lines) if text and not text.endswith("\n") else 0  # the last line lacks its newline: it may be cut
    num_fields = 40 if has_label else 39
    names = (["label"] if has_label else []) + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    rows, bad = [], {k: [] for k in KINDS}
    for number, line in enumerate(lines, 1):
        if number == cut:
            bad["truncated"].append((number, None, None))
            continue
        if line.endswith("\r"):
            line = line[:-1]
        fields = line.split("\t")
        if len(fields) > num_fields:
            bad["long_row"].append((number, None, None))
            continue
        if len(fields) < num_fields and not pad:
            bad["short_row"].append((number, None, None))
            continue
        fields += [""] * (num_fields - len(fields))
        ok = [has_label and i == 0 and f in ("0", "1") or (i >= int(has_label) and f == "")
              or (int(has_label) <= i < int(has_label) + 13 and DEC.fullmatch(f) is not None)
              or (i >= int(has_label) + 13 and HEX.fullmatch(f) is not None) for i, f in enumerate(fields)]
        if not all(ok):
            first = ok.index(False)
            kind = {"l": "bad_label", "I": "bad_dense", "C": "bad_categorical"}[names[first][0]]
            bad[kind].append((number, names[first], fields[first]))
            continue
        dense_fields, cat_fields = fields[int(has_label):int(has_label) + 13], fields[int(has_label) + 13:]
        label = float(fields[0]) if has_label else None
        dense = [int(f) if f else 0 for f in dense_fields]
        cats = [(int(f, 16) if f else 0, f == "") for f in cat_fields]
        rows.append((label, dense, cats))
    return rows, bad


GOOD_DENSE = ["", "0", "7", "-2", "+15", "123456789012345678", "00042"]
BAD_DENSE = ["x", "1.5", " 3", "-", "1234567890123456789", "0x10", "1e3"]
GOOD_HEX = ["", "68fd1e64", "0", "ABCDEF12", "ffffffffffffffff", "a"]
BAD_HEX = ["g1", "0x1f", "12345678901234567", " ab", "-1"]


def random_lines(rng: np.random.Generator, count: int, has_label: bool = True) -> bytes:
    """Mostly good Criteo lines, some with one defect of each kind, some blank, some \\r\\n."""
    out = []
    for _ in range(count):
        fields = ([str(rng.integers(0, 2))] if has_label else [])
        fields += [GOOD_DENSE[rng.integers(len(GOOD_DENSE))] for _ in range(13)]
        fields += [GOOD_HEX[rng.integers(len(GOOD_HEX))] for _ in range(26)]
        defect = rng.integers(0, 12)
        offset = int(has_label)
        if defect == 0:
            fields = fields[: rng.integers(0, len(fields))]
        elif defect == 1:
            fields += ["", "x"][: rng.integers(1, 3)]
        elif defect == 2 and has_label:
            fields[0] = ["2", "", "01", "yes"][rng.integers(4)]
        elif defect == 3:
            fields[offset + rng.integers(13)] = BAD_DENSE[rng.integers(len(BAD_DENSE))]
        elif defect == 4:
            fields[offset + 13 + rng.integers(26)] = BAD_HEX[rng.integers(len(BAD_HEX))]
        elif defect == 5:
            fields[offset + rng.integers(13)] = BAD_DENSE[rng.integers(len(BAD_DENSE))]
            fields[offset + 13 + rng.integers(26)] = BAD_HEX[rng.integers(len(BAD_HEX))]
        line = "\t".join(fields)
        if defect == 6:
            line += "\r"
        out.append(line)
    text = "\n".join(out)
    return (text + ("\n" if rng.random() < 0.5 else "")).encode("latin-1")


def check_against_reference(data: bytes, has_label: bool = True, pad: bool = False, chunk_bytes: int | None = None,
                            tmp_path: Path | None = None) -> None:
    expected_rows, expected_bad = reference(data, has_label, pad)
    if chunk_bytes is None:
        rows, report = parse_criteo_bytes(data, has_label=has_label, pad_short_rows=pad, max_examples=1000)
    else:
        assert tmp_path is not None
        path = tmp_path / "data.txt"
        path.write_bytes(data)
        rows, report = read_criteo_tsv(str(path), has_label=has_label, pad_short_rows=pad, max_examples=1000,
                                       chunk_bytes=chunk_bytes)
    assert len(rows) == len(expected_rows)
    assert report.counts == {k: len(v) for k, v in expected_bad.items()}
    for kind, expected in expected_bad.items():  # every message names the right line, field and text
        assert [int(re.search(r":(\d+): ", m).group(1)) for m in report.examples[kind]] == [e[0] for e in expected]
        for message, (_, name, text) in zip(report.examples[kind], expected, strict=True):
            if name is not None:
                assert f": field {name} (" in message and f"): {text!r} is not" in message, (message, name, text)
    if expected_rows:
        if has_label:
            np.testing.assert_array_equal(rows.labels, [r[0] for r in expected_rows])
        else:
            assert rows.labels is None
        np.testing.assert_array_equal(rows.dense, dense_transform(np.array([r[1] for r in expected_rows])))
        np.testing.assert_array_equal(rows.categorical, np.array([[c[0] for c in r[2]] for r in expected_rows],
                                                                 dtype=np.uint64))
        np.testing.assert_array_equal(rows.missing, np.array([[c[1] for c in r[2]] for r in expected_rows]))


@pytest.mark.parametrize("seed", range(4))
def test_parser_equals_reference_on_random_lines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    check_against_reference(random_lines(rng, 300), has_label=True)


def test_parser_equals_reference_without_label_and_with_padding() -> None:
    rng = np.random.default_rng(7)
    check_against_reference(random_lines(rng, 200, has_label=False), has_label=False)
    check_against_reference(random_lines(rng, 200), has_label=True, pad=True)


@pytest.mark.parametrize("chunk_bytes", [1, 97, 4096])
def test_chunk_boundaries_change_nothing(chunk_bytes: int, tmp_path: Path) -> None:
    data = random_lines(np.random.default_rng(11), 120)
    check_against_reference(data, chunk_bytes=chunk_bytes, tmp_path=tmp_path)
    path = tmp_path / "data.txt"
    chunks = list(iter_line_chunks(str(path), chunk_bytes))
    assert b"".join(c for c, _ in chunks) == data
    assert [first for _, first in chunks] == [1 + b"".join(c for c, _ in chunks[:i]).count(b"\n")
                                              for i in range(len(chunks))]


def test_values_of_one_line() -> None:
    line = "\t".join(["1", "5", "", "-2", "+3", *["0"] * 9, "68fd1e64", "", "FFFFFFFFFFFFFFFF", *[""] * 23]) + "\n"
    rows, report = parse_criteo_bytes(line.encode())
    assert report.total == 0 and len(rows) == 1
    np.testing.assert_allclose(rows.dense[0, :4], np.log1p([5, 0, 0, 3]).astype(np.float32))
    assert int(rows.categorical[0, 0]) == 0x68FD1E64 and int(rows.categorical[0, 2]) == 2**64 - 1
    assert rows.missing[0, :3].tolist() == [False, True, False]


def test_error_policy_names_file_line_and_field() -> None:
    good = "\t".join(["0", *["1"] * 13, *["abc"] * 26])
    bad = "\t".join(["0", *["1"] * 5, "12a", *["1"] * 7, *["abc"] * 26])
    data = ("\n".join([good, good, bad, good, "junk"]) + "\n").encode()
    with pytest.raises(DataError) as error:
        parse_criteo_bytes(data, source="day_0", first_line=100, on_error="error")
    message = str(error.value)
    assert message.startswith("day_0:102: field I6 (field 7 of 40): '12a' is not an integer")
    assert "data.on_error=skip" in message
    rows, report = parse_criteo_bytes(data, source="day_0", first_line=100)
    assert len(rows) == 3 and report.counts["bad_dense"] == 1 and report.counts["short_row"] == 1
    assert report.examples["short_row"] == ["day_0:104: 1 tab-separated fields, expected 40 (label, 13 integer, "
                                            "26 hexadecimal)"]


def test_kaggle_sample_matches_its_published_statistics() -> None:
    rows, report = read_criteo_tsv(str(require(KAGGLE_SAMPLE)), chunk_bytes=1 << 18)
    assert report.total == 0 and len(rows) == 10_000
    assert int(rows.labels.sum()) == 2182  # SOURCE.md: label 1: 2,182
    distinct = [len(np.unique(rows.categorical[~rows.missing[:, j], j])) for j in range(26)]
    assert distinct == [175, 386, 5520, 4032, 56, 7, 3184, 93, 3, 2986, 2084, 5283, 1725, 24, 2035, 4723, 9, 1149,
                        546, 3, 5036, 7, 12, 2524, 39, 1938]
    assert round(float(rows.missing[:, 21].mean()), 3) == 0.818  # C22


def test_kaggle_test_file_has_no_label() -> None:
    path = str(require(KAGGLE_TEST_SAMPLE))
    rows, report = read_criteo_tsv(path, has_label=False)
    assert len(rows) == 1999 and report.total == 0 and rows.labels is None
    rows, report = read_criteo_tsv(path, has_label=True)  # the wrong layout is counted, never silent
    assert len(rows) == 0 and report.counts["short_row"] == 1999


def test_a_last_line_without_newline_is_truncated_never_a_changed_row() -> None:
    good = "\t".join(["1", *["3"] * 13, *["16edf87e"] * 26])
    cut = good[:-3]  # cut inside C26: '16edf' is still a valid hexadecimal id
    rows, report = parse_criteo_bytes(f"{good}\n{cut}".encode(), source="day_0")
    assert len(rows) == 1 and report.counts["truncated"] == 1 and report.total == 1
    assert int(rows.categorical[0, -1]) == 0x16EDF87E
    assert report.examples["truncated"][0].startswith("day_0:2: the last line has no line end")
    assert "end it with a newline" in report.examples["truncated"][0]
    with pytest.raises(DataError, match=r"day_0:2: the last line has no line end.*data.on_error=skip"):
        parse_criteo_bytes(f"{good}\n{cut}".encode(), source="day_0", on_error="error")
    rows, report = parse_criteo_bytes(f"{good}\n{good}\n".encode())  # with its newline the same line is a row
    assert len(rows) == 2 and report.total == 0


def test_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    line = "\t".join(["1", *["3"] * 13, *["68fd1e64"] * 26]) + "\n"
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + (line * 3).encode())
    rows, report = read_criteo_tsv(str(path), chunk_bytes=len(line))
    assert len(rows) == 3 and report.total == 0 and rows.labels.tolist() == [1.0] * 3
    rows, report = parse_criteo_bytes(b"\xef\xbb\xbf" + line.encode(), first_line=7)  # only the file's start
    assert report.counts["bad_label"] == 1


def test_dense_values_are_finite_float32_after_the_transform() -> None:
    values = dense_transform(np.array([10**18 - 1, -(10**18 - 1), 0]))  # the largest 18-digit integers
    assert values.dtype == np.float32 and np.isfinite(values).all()

"""Column-wise parsing of a table's text fields (CSV fields, or Parquet values as text): numbers and bags of
categorical values, with a mask of the fields that do not parse. One numpy or C-level pass per column
(``float`` on an object array, ``np.fromiter``); a per-field Python fallback runs only for a column that
holds a bad field, to find which.

Example:
    >>> values, bad = parse_floats(["1.5", "", "x"], empty=0.0)
    >>> values[:2].tolist(), bad.tolist()
    ([1.5, 0.0], [False, False, True])
    >>> bags = parse_bags(["1f", "", "a|b"], dtype="hex", separator="|")
    >>> bags.values.tolist(), bags.lengths.tolist(), bags.bad.tolist()
    ([31, 10, 11], [1, 0, 2], [False, False, False])
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Field = str | list[str]  # a CSV field, or a Parquet value as text (a list column's value: a list)
_U64 = (1 << 64) - 1


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process and run (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_HEX = re.compile(r"[0-9a-fA-F]{1,16}")  # as the Criteo reader: 1 to 16 hex digits, nothing else
_INT = re.compile(r"[+-]?[0-9]+(?:\.0*)?")  # a decimal integer; "3.0" too (pandas writes int columns with nulls so)
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _hex(text: str) -> int:
    if not _HEX.fullmatch(text):
        raise ValueError(f"{text!r} is not 1 to 16 hexadecimal digits")
    return int(text, 16)


def _int(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal integer")
    number = int(text.partition(".")[0])
    if not _INT64[0] <= number <= _INT64[1]:
        raise ValueError(f"{text!r} is out of the int64 range")
    return number & _U64


PARSERS: dict[str, Callable[[str], int]] = {
    "string": stable_hash,
    "hex": _hex,
    "int": _int,
}


def parse_value(text: str, dtype: str) -> int:
    """The 64-bit value of a categorical field's ``text`` (ValueError if it is not of ``dtype``).

    ``hex``: 1 to 16 hexadecimal digits (as ``recframe.data.criteo``: no ``0x``, sign, space or ``_``).
    ``int``: an optional sign and decimal digits, optionally followed by ``.`` and zeros, in the int64 range
    (negative values wrap to 64 bits). ``string``: any text (``stable_hash``).

    Example:
        >>> parse_value("68fd1e64", "hex"), parse_value("-1", "int"), parse_value("3.0", "int")
        (1761418852, 18446744073709551615, 3)
    """
    return PARSERS[dtype](text)


def _has_lists(fields: Sequence[Field]) -> bool:
    return list in set(map(type, fields))


def _objects(fields: Sequence[Field]) -> np.ndarray:
    if not _has_lists(fields):
        return np.array(fields, dtype=object).reshape(len(fields))
    out = np.empty(len(fields), dtype=object)
    for i, field in enumerate(fields):  # element by element: lists must stay elements, not become a dimension
        out[i] = field
    return out


def float_or_nan(field: Field) -> float:
    """``float(field)``, or NaN where it is not a number.

    Example:
        >>> float_or_nan("1e39"), float_or_nan("x")
        (1e+39, nan)
    """
    try:
        return float(field)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def parse_floats(fields: Sequence[Field], empty: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values of ``fields`` and a mask of bad ones (not a finite number; empty ones when ``empty`` is None).

    Args:
        fields: the texts.
        empty: the value of an empty field (None: empty is bad).
    """
    objects = _objects(fields)
    is_empty = objects == ""
    if empty is not None:
        objects[is_empty] = empty
    try:
        values = objects.astype(np.float64)
    except (TypeError, ValueError):
        values = np.fromiter(map(float_or_nan, objects), np.float64, count=len(objects))
    bad = ~np.isfinite(values)
    if empty is None:
        bad |= is_empty
    return values, bad


@dataclass
class Bags:
    """A column of categorical bags: ``values[offsets[i] : offsets[i] + lengths[i]]`` is row ``i``'s bag.

    Args:
        values: uint64 values, all bags one after another (a bad row's bag: zeros).
        lengths: values per row (0: missing).
        bad: rows with a field that is not of the dtype.
    """

    values: np.ndarray
    lengths: np.ndarray
    bad: np.ndarray

    def take(self, rows: np.ndarray) -> Bags:
        """The bags of ``rows`` (a boolean mask)."""
        return Bags(self.values[np.repeat(rows, self.lengths)], self.lengths[rows], self.bad[rows])

    def matrix(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``[rows, width]`` values (uint64) and a mask of the cells that hold one."""
        rows = self.lengths.size
        values = np.zeros((rows, width), np.uint64)
        present = np.zeros((rows, width), bool)
        row = np.repeat(np.arange(rows), self.lengths)
        starts = np.cumsum(self.lengths) - self.lengths
        position = np.arange(self.values.size) - np.repeat(starts, self.lengths)
        values[row, position] = self.values
        present[row, position] = True
        return values, present


def _split(field: Field, separator: str) -> list[str]:
    if isinstance(field, list):
        return [v for v in field if v]
    if not field:
        return []
    return [v for v in field.split(separator) if v] if separator else [field]


def bag_size(field: Field, separator: str) -> int:
    """How many values ``field`` holds (its non-empty parts)."""
    return len(_split(field, separator))


def first_bad_value(field: Field, dtype: str, separator: str) -> str:
    """The first value of ``field`` that is not of ``dtype`` ("" if all are)."""
    for text in _split(field, separator):
        try:
            PARSERS[dtype](text)
        except ValueError:
            return text
    return ""


def _parse_all(parse: Callable[[str], int], bags: list[list[str]], bad: np.ndarray, count: int) -> np.ndarray:
    """The values of every bag; a bag with a value that does not parse gets zeros and is marked in ``bad``."""
    parts = []
    for i, bag in enumerate(bags):
        try:
            parts.append([parse(v) for v in bag])
        except ValueError:
            bad[i] = True
            parts.append([0] * len(bag))
    return np.fromiter((v for part in parts for v in part), np.uint64, count=count)


def parse_bags(fields: Sequence[Field], dtype: str, separator: str) -> Bags:
    """The categorical values of each field: ``separator`` ("": one value a field) splits a text, a list is a bag.

    Args:
        fields: the texts.
        dtype: ``string``, ``int`` or ``hex`` (``PARSERS``).
        separator: splits a text field into values.
    """
    parse = PARSERS[dtype]
    bad = np.zeros(len(fields), bool)
    if not separator and not _has_lists(fields):  # one value a field: nothing to split
        texts = np.array(fields, dtype=object).reshape(len(fields))
        lengths = (texts != "").astype(np.int64)
        flat = texts[lengths > 0]
        try:
            values = np.fromiter(map(parse, flat), np.uint64, count=flat.size)
        except ValueError:
            values = _parse_all(parse, [[t] if t else [] for t in texts.tolist()], bad, flat.size)
        return Bags(values, lengths, bad)
    bags = [_split(f, separator) for f in fields]
    lengths = np.fromiter(map(len, bags), np.int64, count=len(bags))
    flat = [v for bag in bags for v in bag]
    try:
        values = np.fromiter(map(parse, flat), np.uint64, count=len(flat))
    except ValueError:
        values = _parse_all(parse, bags, bad, len(flat))
    return Bags(values, lengths, bad)

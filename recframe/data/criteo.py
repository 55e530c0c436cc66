"""Criteo TSV reading: the Kaggle ``train.txt``/``test.txt`` and the 1TB ``day_N`` layout.

Each line is ``label \\t I1 .. I13 \\t C1 .. C26`` (40 fields; 39 without the label, as in Kaggle's
``test.txt``: ``has_label=False``). What a line must look like, and what it becomes:

- label: ``0`` or ``1`` -> float32.
- I1..I13 (dense): an integer ``[+-]?[0-9]{1,18}`` or empty (missing). Missing becomes 0 before
  the transform ``log(1 + max(x, 0))`` (negative counts, e.g. I2's -2, become 0 too), as the
  DLRM/TorchRec Criteo pipeline does -> float32.
- C1..C26 (categorical): 1 to 16 hexadecimal digits (Criteo's are 8, lowercase) or empty
  (missing) -> uint64 value + a missing flag. ``recframe.data.categorical`` maps them to table
  rows (row 0 is reserved for missing).
- A trailing ``\\r`` (Windows line end) is dropped. With ``pad_short_rows``, a line with fewer
  fields is read as if its trailing empty fields had been stripped (some re-exports do that).
- A UTF-8 byte-order mark at the start of the file (line 1) is dropped.
- A last line without its newline may have been cut inside a field (an interrupted copy or
  download: ``16edf87e`` cut to ``16edf`` still looks valid), so it is never read as a row: it is
  ``truncated``. The dense values are checked after the transform and the cast to float32 (the
  training dtype): at most 18 digits always give a finite float32.

Any other line is malformed: it is skipped and counted under the kind of its first problem in
field order (``short_row``, ``long_row``, ``bad_label``, ``bad_dense``, ``bad_categorical``; ``truncated``
before them all), or,
with ``on_error="error"``, raises ``DataError`` naming ``file:line``, the field and the fix.

Parsing is vectorized over the raw bytes with numpy (no per-line Python): line and tab
positions, then one pass per field over all lines of a chunk. A file is read in chunks of about
``chunk_bytes`` cut at line ends, so memory is bounded by the chunk, not the file.

Example:
    >>> line = "1\\t5\\t\\t-2" + "\\t0" * 10 + "\\t68fd1e64" + "\\t" * 25 + "\\n"
    >>> rows, report = parse_criteo_bytes(line.encode(), source="mem")
    >>> rows.labels.tolist(), [round(float(x), 3) for x in rows.dense[0, :3]], hex(int(rows.categorical[0, 0]))
    ([1.0], [1.792, 0.0, 0.0], '0x68fd1e64')
    >>> rows.missing[0, :2].tolist(), report.total
    ([False, True], 0)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from recframe.data.report import DataError, SkipReport
from recframe.vocab import OnError

NUM_DENSE = 13
NUM_SPARSE = 26
DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))  # Criteo's names, used in messages
SPARSE_NAMES = tuple(f"C{i}" for i in range(1, NUM_SPARSE + 1))
KINDS = ("short_row", "long_row", "bad_label", "bad_dense", "bad_categorical", "truncated")
BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark, which spreadsheet exports put at the start of a file
MAX_DENSE_DIGITS = 18  # an int64 holds every 18-digit integer
MAX_HEX_DIGITS = 16  # a uint64 holds every 16-digit hexadecimal id
DEFAULT_CHUNK_BYTES = 1 << 22

_DIGIT = np.full(256, 255, dtype=np.uint8)
_DIGIT[48:58] = np.arange(10)
_HEX = _DIGIT.copy()
_HEX[97:103] = np.arange(10, 16)  # a-f
_HEX[65:71] = np.arange(10, 16)  # A-F


@dataclass
class CriteoRows:
    """Parsed rows, one per valid line, in file order.

    Args:
        labels: ``[n]`` float32 0/1, or None for files without labels.
        dense: ``[n, 13]`` float32, ``log(1 + max(x, 0))`` with missing as 0.
        categorical: ``[n, 26]`` uint64 hexadecimal values (0 where missing).
        missing: ``[n, 26]`` bool, True where the categorical field was empty.
    """

    labels: np.ndarray | None
    dense: np.ndarray
    categorical: np.ndarray
    missing: np.ndarray

    def __len__(self) -> int:
        return self.dense.shape[0]

    @staticmethod
    def empty(has_label: bool) -> CriteoRows:
        return CriteoRows(np.zeros(0, np.float32) if has_label else None, np.zeros((0, NUM_DENSE), np.float32),
                          np.zeros((0, NUM_SPARSE), np.uint64), np.zeros((0, NUM_SPARSE), bool))

    @staticmethod
    def concat(parts: list[CriteoRows], has_label: bool) -> CriteoRows:
        """The rows of several chunks, in order."""
        if not parts:
            return CriteoRows.empty(has_label)
        if len(parts) == 1:
            return parts[0]
        labels = np.concatenate([p.labels for p in parts]) if has_label else None  # type: ignore[misc]
        return CriteoRows(labels, np.concatenate([p.dense for p in parts]),
                          np.concatenate([p.categorical for p in parts]), np.concatenate([p.missing for p in parts]))


def dense_transform(values: np.ndarray) -> np.ndarray:
    """``log(1 + max(x, 0))`` as float32 (missing values are 0 before this)."""
    return np.log1p(np.maximum(values, 0).astype(np.float64)).astype(np.float32)


_PAD = 32  # zero bytes around a chunk, so that a right-aligned window of any field width stays inside


def _parse_fields(padded: np.ndarray, start: np.ndarray, end: np.ndarray, table: np.ndarray, base: int,
                  max_digits: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integers (``base`` 10 or 16, digit ``table``) in ``buf[start:end]`` per row; empty -> 0.

    The digits of all rows are copied right-aligned into one ``[rows, width]`` block (one gather
    of windows of a sliding-window view: no per-byte index arrays), so that digit ``k`` from the
    right has the weight ``base ** k`` in every row: one matrix product gives every value.

    Args:
        padded: the chunk's bytes with ``_PAD`` zero bytes before and after (positions are the chunk's).

    Returns:
        ``(values, good)``: int64 (base 10) or uint64 (base 16) values, and whether each field is valid.
    """
    negative = None
    digits_start = start
    if signed:
        first = padded[start + _PAD]
        sign = (end > start) & ((first == 45) | (first == 43))  # '-' or '+'
        negative = sign & (first == 45)
        digits_start = start + sign
    digits = end - digits_start
    good = (end == start) | ((digits >= 1) & (digits <= max_digits))
    dtype = np.int64 if base == 10 else np.uint64
    width = int(min(digits.max(initial=0), max_digits))
    if width == 0:
        return np.zeros(start.size, dtype=dtype), good
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)[end + (_PAD - width)]  # [rows, width]
    inside = np.arange(width)[None, :] >= (width - digits)[:, None]  # right-aligned: last column = last digit
    d = table[windows]
    good &= ~(inside & (d == 255)).any(axis=1)
    d[~inside] = 0
    weights = (dtype(base) ** np.arange(width - 1, -1, -1, dtype=dtype)).astype(dtype)
    value = d.astype(dtype) @ weights
    if negative is not None:
        value = np.where(negative, -value, value)
    return value, good


def _field_bounds(starts: np.ndarray, ends: np.ndarray, tabs: np.ndarray, first_tab: np.ndarray,
                  ntabs: np.ndarray, num_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte of every field ``[n, num_fields]``; fields past a short row's end are empty."""
    k = np.arange(num_fields - 1)
    present = k[None, :] < ntabs[:, None]
    if tabs.size:
        tab_at = np.where(present, tabs[np.minimum(first_tab[:, None] + k[None, :], tabs.size - 1)], ends[:, None])
    else:
        tab_at = np.broadcast_to(ends[:, None], present.shape)
    field_start = np.empty((starts.size, num_fields), dtype=np.int64)
    field_end = np.empty_like(field_start)
    field_start[:, 0] = starts
    field_start[:, 1:] = np.where(present, tab_at + 1, ends[:, None])
    field_end[:, :-1] = tab_at
    field_end[:, -1] = ends
    return field_start, field_end


def _describe(buf: np.ndarray, kind: str, field: int, line: int, source: str, ntabs: int,
              bounds: tuple[int, int], has_label: bool, num_fields: int) -> str:
    """``file:line: field NAME (...): 'text' <problem>`` for one bad line."""
    where = f"{source}:{line}"
    if kind == "truncated":
        return (f"{where}: the last line has no line end, so it may have been cut inside a field (an interrupted "
                f"copy or download); its {ntabs + 1} fields were not read: if the file is complete, end it with a "
                "newline")
    if kind in ("short_row", "long_row"):
        return (f"{where}: {ntabs + 1} tab-separated fields, expected {num_fields} "
                f"({'label, ' if has_label else ''}13 integer, 26 hexadecimal)")
    text = bytes(buf[bounds[0]:bounds[1]]).decode("utf-8", errors="replace")
    shown = repr(text if len(text) <= 40 else text[:40] + "...")
    names = (("label",) if has_label else ()) + DENSE_NAMES + SPARSE_NAMES
    name = f"field {names[field]} (field {field + 1} of {num_fields})"
    if kind == "bad_label":
        return f"{where}: {name}: {shown} is not a label (0 or 1)"
    if kind == "bad_dense":
        return f"{where}: {name}: {shown} is not an integer of at most {MAX_DENSE_DIGITS} digits (or empty)"
    return f"{where}: {name}: {shown} is not a hexadecimal id of at most {MAX_HEX_DIGITS} digits (or empty)"


def parse_criteo_bytes(data: bytes, source: str = "<bytes>", first_line: int = 1, has_label: bool = True,
                       pad_short_rows: bool = False, on_error: str = "skip",
                       max_examples: int = 5) -> tuple[CriteoRows, SkipReport]:
    """Parse whole lines of Criteo TSV (see the module docstring for the format and the policy).

    Args:
        data: complete lines; a last line without its newline is ``truncated`` (chunks of a file
            end at a newline, except the file's last).
        source: the file name used in messages.
        first_line: the 1-based line number of the first line of ``data`` in ``source``.
        has_label: lines start with the label (40 fields) or not (39).
        pad_short_rows: read lines with fewer fields as having trailing empty fields.
        on_error: ``skip`` (count and drop malformed lines) or ``error`` (raise ``DataError``).
        max_examples: messages kept per kind of problem.

    Returns:
        The valid rows and the report of skipped lines.
    """
    if problem := OnError.problem("on_error", on_error):
        raise ValueError(problem)
    report = SkipReport(KINDS, max_examples)
    if first_line == 1 and data.startswith(BOM):
        data = data[len(BOM):]
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return CriteoRows.empty(has_label), report
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if buf[-1] == 10 else np.append(newlines, buf.size)
    starts = np.concatenate(([0], newlines + 1))[: ends.size]
    ends = ends - ((ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13))  # drop a trailing \r
    tabs = np.flatnonzero(buf == 9)
    first_tab = np.searchsorted(tabs, starts)
    ntabs = np.searchsorted(tabs, ends) - first_tab
    num_fields = NUM_DENSE + NUM_SPARSE + int(has_label)

    # kind of each line's first problem: index into KINDS, or -1 for a good line
    kind = np.full(starts.size, -1, dtype=np.int64)
    if not pad_short_rows:
        kind[ntabs < num_fields - 1] = KINDS.index("short_row")
    kind[ntabs > num_fields - 1] = KINDS.index("long_row")
    if buf[-1] != 10:
        kind[-1] = KINDS.index("truncated")
    rows = np.flatnonzero(kind < 0)
    field_start, field_end = _field_bounds(starts[rows], ends[rows], tabs, first_tab[rows], ntabs[rows], num_fields)
    first_bad = np.full(rows.size, num_fields, dtype=np.int64)
    labels = None
    col = 0
    if has_label:
        length = field_end[:, 0] - field_start[:, 0]
        byte = buf[np.minimum(field_start[:, 0], buf.size - 1)]
        first_bad[~((length == 1) & ((byte == 48) | (byte == 49)))] = 0
        labels = (byte == 49).astype(np.float32)
        col = 1
    padded = np.concatenate([np.zeros(_PAD, np.uint8), buf, np.zeros(_PAD, np.uint8)])
    dense_raw = np.empty((rows.size, NUM_DENSE), dtype=np.int64)
    for j in range(NUM_DENSE):
        dense_raw[:, j], good = _parse_fields(padded, field_start[:, col], field_end[:, col], _DIGIT, 10,
                                              MAX_DENSE_DIGITS, signed=True)
        first_bad = np.where(good, first_bad, np.minimum(first_bad, col))
        col += 1
    categorical = np.empty((rows.size, NUM_SPARSE), dtype=np.uint64)
    missing = np.empty((rows.size, NUM_SPARSE), dtype=bool)
    for j in range(NUM_SPARSE):
        categorical[:, j], good = _parse_fields(padded, field_start[:, col], field_end[:, col], _HEX, 16,
                                                MAX_HEX_DIGITS, signed=False)
        missing[:, j] = field_end[:, col] == field_start[:, col]
        first_bad = np.where(good, first_bad, np.minimum(first_bad, col))
        col += 1

    label_fields, dense_end = int(has_label), int(has_label) + NUM_DENSE
    bad_rows = first_bad < num_fields
    kind[rows[bad_rows]] = np.select(
        [first_bad[bad_rows] < label_fields, first_bad[bad_rows] < dense_end],
        [KINDS.index("bad_label"), KINDS.index("bad_dense")], KINDS.index("bad_categorical"))
    if (kind >= 0).any():
        field_of = np.full(starts.size, -1, dtype=np.int64)
        field_of[rows[bad_rows]] = first_bad[bad_rows]
        position = {int(rows[i]): int(i) for i in np.flatnonzero(bad_rows)}  # line -> index in rows
        counts = np.bincount(kind[kind >= 0], minlength=len(KINDS))
        if on_error == OnError.error:
            examples = np.flatnonzero(kind >= 0)[:1]
        else:  # the first few lines of each kind, in file order
            examples = np.sort(np.concatenate([np.flatnonzero(kind == k)[:max_examples] for k in range(len(KINDS))]))
        for line in examples:
            name = KINDS[kind[line]]
            f = int(field_of[line])
            bounds = (0, 0)
            if f >= 0:
                i = position[int(line)]
                bounds = (int(field_start[i, f]), int(field_end[i, f]))
            message = _describe(buf, name, f, first_line + int(line), source, int(ntabs[line]), bounds, has_label,
                                num_fields)
            if on_error == OnError.error:
                raise DataError(f"{message}; fix or remove the line, or set data.on_error=skip to skip and count "
                                "malformed lines")
            report.add(name, message, count=0)
        for k, name in enumerate(KINDS):
            report.add(name, "", count=int(counts[k]))
    keep = ~bad_rows
    return CriteoRows(
        labels=labels[keep] if labels is not None else None,
        dense=dense_transform(dense_raw[keep]),
        categorical=categorical[keep],
        missing=missing[keep],
    ), report


def iter_line_chunks(path: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """``(data, first_line)`` chunks of whole lines of a file (local path or fsspec URL; ``.gz`` is read as gzip).

    Args:
        path: the file.
        chunk_bytes: about how many bytes per chunk (a longer line makes its chunk longer).
    """
    import fsspec

    line = 1
    rest = b""
    with fsspec.open(path, "rb", compression="infer") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                if rest:
                    yield rest, line
                return
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            yield data[:cut], line
            line += data.count(b"\n", 0, cut)
            rest = data[cut:]


def read_criteo_tsv(path: str, has_label: bool = True, pad_short_rows: bool = False, on_error: str = "skip",
                    max_examples: int = 5, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[CriteoRows, SkipReport]:
    """Parse a whole Criteo TSV file into memory (for files that fit; see ``recframe preprocess`` for others).

    Args:
        path: the file (Kaggle ``train.txt`` layout, or ``test.txt`` with ``has_label=False``).
        has_label: lines start with the label.
        pad_short_rows: read lines with fewer fields as having trailing empty fields.
        on_error: ``skip`` or ``error``.
        max_examples: messages kept per kind of problem.
        chunk_bytes: parse in chunks of about this many bytes.

    Example:
        >>> rows, report = read_criteo_tsv("train.txt")  # doctest: +SKIP
    """
    parts, report = [], SkipReport(KINDS, max_examples)
    for data, first_line in iter_line_chunks(path, chunk_bytes):
        rows, chunk_report = parse_criteo_bytes(data, source=str(path), first_line=first_line, has_label=has_label,
                                                pad_short_rows=pad_short_rows, on_error=on_error,
                                                max_examples=max_examples)
        parts.append(rows)
        report.merge(chunk_report)
    return CriteoRows.concat(parts, has_label), report

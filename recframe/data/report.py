"""Malformed input: the error policy, the error type, and the count of skipped lines per kind.

Readers of real files never pass a bad line silently. With ``on_error="skip"`` they drop it and
count it here, under the kind of its first problem (in field order), keeping the file, line and
field of the first few of each kind; with ``on_error="error"`` they raise ``DataError`` naming
the first bad line. ``SkipReport.metrics()`` is what goes into ``metrics.json`` and TensorBoard
(``data/skipped_<kind>``); ``SkipReport.summary()`` is the log line.

Example:
    >>> report = SkipReport(kinds=("short_row", "bad_dense"), max_examples=2)
    >>> report.add("bad_dense", "train.txt:7: field I3 (dense): 'x1' is not an integer")
    >>> report.metrics()
    {'data/skipped_short_row': 0, 'data/skipped_bad_dense': 1, 'data/skipped_lines': 1}
    >>> print(report.summary("train.txt"))
    train.txt: skipped 1 malformed line (bad_dense=1); first ones:
      train.txt:7: field I3 (dense): 'x1' is not an integer
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recframe.errors import RecframeError


class DataError(RecframeError, ValueError):
    """A malformed input line with ``data.on_error=error``; the message names file, line and field."""


@dataclass
class SkipReport:
    """Skipped lines by kind, with the first few messages of each kind.

    Args:
        kinds: every kind this reader can skip, in report order (all appear in ``metrics()``,
            zeros included, so a run's report always has the same keys).
        max_examples: messages kept per kind.
    """

    kinds: tuple[str, ...]
    max_examples: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in self.kinds:
            self.counts.setdefault(kind, 0)
            self.examples.setdefault(kind, [])

    def add(self, kind: str, message: str, count: int = 1) -> None:
        """Count ``count`` skipped lines of ``kind``; keep ``message`` if fewer than ``max_examples`` are kept."""
        if kind not in self.counts:
            raise KeyError(f"SkipReport: unknown kind {kind!r}; known: {list(self.kinds)}")
        self.counts[kind] += count
        if message and len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(message)

    def merge(self, other: SkipReport) -> None:
        """Add another report's counts and examples (of a later chunk of the same input)."""
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
            kept = self.examples.setdefault(kind, [])
            kept.extend(other.examples.get(kind, [])[: max(self.max_examples - len(kept), 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def metrics(self, prefix: str = "data/skipped_") -> dict[str, int]:
        """``{"data/skipped_<kind>": n, ..., "data/skipped_lines": total}``."""
        out = {f"{prefix}{kind}": int(n) for kind, n in self.counts.items()}
        out[f"{prefix}lines"] = int(self.total)
        return out

    def summary(self, source: str) -> str:
        """One log line with the counts, then the kept messages (file:line: field: problem)."""
        if not self.total:
            return f"{source}: no malformed lines"
        noun = "line" if self.total == 1 else "lines"
        counts = ", ".join(f"{k}={n}" for k, n in self.counts.items() if n)
        lines = [f"{source}: skipped {self.total} malformed {noun} ({counts}); first ones:"]
        lines += [f"  {m}" for kind in self.counts for m in self.examples.get(kind, [])]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (for ``feature_map.json``)."""
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items() if v}}

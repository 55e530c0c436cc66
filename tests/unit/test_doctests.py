"""Every docstring example in recframe/ runs, in the default tier (``make test``, ``.ci/run``).

One test per module that has examples (a ``>>>`` in its source): the module's doctests run with
``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``, and the test fails with doctest's report when an
example's output differs or it raises. Examples that need a GPU, a process group, data files or
minutes are marked ``# doctest: +SKIP`` in their docstring, next to the line.

``STALE`` names the docstrings known to fail that this change may not edit (another owner's file),
with the fix: such a docstring is run too, and its test fails once it passes, so the entry is
removed when the docstring is fixed.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

import recframe

PACKAGE = Path(recframe.__file__).parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# doctest name -> the fix.
STALE: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py")
                 if p.name != "__main__.py" and ">>>" in p.read_text(encoding="utf-8"))


def test_modules_are_found() -> None:
    assert "recframe.sparse.jagged" in MODULES and len(MODULES) > 50


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failed, fixed = [], []
    for test in doctest.DocTestFinder().find(module, name):
        if not test.examples:
            continue
        result = runner.run(test, out=report.write, clear_globs=True)
        if test.name in STALE:
            fixed += [test.name] if result.failed == 0 else []
        elif result.failed:
            failed.append(test.name)
    assert not failed, f"docstring examples of {name} fail:\n{report.getvalue()}"
    assert not fixed, f"{fixed} pass now: remove them from STALE in {__file__}"

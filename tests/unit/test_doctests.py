"""Every docstring example in recframe/ runs, in the default tier (``make test``, ``.ci/run``).

One test per module that has examples (a ``>>>`` in its source): the module's doctests run with
``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``, and the test fails with doctest's report when an
example's output differs or it raises. Examples that need a GPU, a process group, data files or
minutes are marked ``# doctest: +SKIP`` in their docstring, next to the line.
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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py")
                 if p.name != "__main__.py" and ">>>" in p.read_text(encoding="utf-8"))


def test_modules_are_found() -> None:
    assert "recframe.sparse.jagged" in MODULES and len(MODULES) > 50


# modules that import an optional dependency at module level: skipped, saying so, where it is absent
NEEDS = {"recframe.embedding.kernels.triton_kernels": "triton", "recframe.serving.triton_lookup": "triton"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"{name} needs {NEEDS[name]} (pip install -e '.[test]')")
    module = importlib.import_module(name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failed = []
    for test in doctest.DocTestFinder().find(module, name):
        if test.examples and runner.run(test, out=report.write, clear_globs=True).failed:
            failed.append(test.name)
    assert not failed, f"docstring examples of {failed} fail:\n{report.getvalue()}"

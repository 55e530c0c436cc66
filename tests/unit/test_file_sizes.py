"""Files that each hold one idea: no module of recframe/ is over 400 lines (issue 15's must-show)."""

from __future__ import annotations

from pathlib import Path

import recframe

LIMIT = 400


def test_no_module_is_over_400_lines() -> None:
    root = Path(recframe.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert len(sizes) > 50
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}

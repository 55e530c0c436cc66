"""Layers point down: what each top-level part of recframe/ may import, checked on the source with ``ast``.

``LAYERS`` ranks the top-level subpackages and modules of recframe/; a module may import another
part of recframe only if that part's rank is lower (same part: anything). That one rule forbids
every import cycle between parts, and the imports between parts of the same rank (data and
distributed know nothing of each other). On top of it, the lower floors (sparse, embedding,
models, data, config) import no Lightning. Every import statement counts: at module level, inside
a function (lazy), or under ``if TYPE_CHECKING``; examples in docstrings do not (they are text).

How it fails: add ``from recframe.training.module import RecModule`` (or ``import
pytorch_lightning``) to any module of recframe/data/, or ``from recframe.distributed.plan import
ShardingPlan`` to recframe/config/validate.py, and :func:`violations` lists that line, naming the
file, the line number and the rule; ``test_the_rules_catch_an_upward_import`` shows it on such
source text. A new top-level part of recframe/ fails until it gets its rank here. Inside config/,
the modules import each other without a cycle (``module_cycle``: a lazy ``from
recframe.config.compose import Problem`` in validate.py would close compose -> validate -> compose).
"""

from __future__ import annotations

import ast
from pathlib import Path

import recframe

PACKAGE = Path(recframe.__file__).parent

# rank of each top-level part of recframe/ ("recframe": its __init__): imports go to lower ranks only
LAYERS = {
    "recframe": 0, "vocab": 0, "errors": 0, "storage": 0, "storage_options": 0, "openmp_wait": 0,
    "storage_cache": 1,  # local copies of storage's URLs
    "registry": 1,  # it raises errors.ConfigError
    "sparse": 1,
    "embedding": 2,
    "models": 3,
    "config": 4,
    "data": 5, "distributed": 5, "serving": 5,
    "training": 6,
    "cli": 7,
    "__main__": 8,
}
NO_LIGHTNING = {"sparse", "embedding", "models", "data", "config"}
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")


def _part(relative: Path) -> str:
    """The top-level part of recframe/ a file belongs to (``data`` for data/checks.py, ``cli`` for cli.py)."""
    return "recframe" if relative == Path("__init__.py") else relative.parts[0].removesuffix(".py")


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``; ``from a import b`` gives ``a.b``.

    Args:
        source: the text of a Python file.
        module: its dotted name (``recframe.data.checks``), to resolve relative imports.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[:-node.level]
                base = ".".join([*parent, base] if base else parent)
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def violations(source: str, relative: Path) -> list[str]:
    """Every import of the file ``recframe/<relative>`` that breaks a rule, one line each.

    Args:
        source: the file's text.
        relative: its path under recframe/ (``data/checks.py``).
    """
    part = _part(relative)
    module = ".".join(("recframe", *relative.with_suffix("").parts))
    where = f"recframe/{relative.as_posix()}"
    out = []
    for line, name in imported_modules(source, module):
        top, _, rest = name.partition(".")
        if top in LIGHTNING and part in NO_LIGHTNING:
            out.append(f"{where}:{line}: imports {name}; {part}/ knows nothing of Lightning")
        if top != "recframe":
            continue
        target = rest.split(".")[0]
        target = target if target in LAYERS else "recframe"  # `from recframe import __version__`
        if target != part and LAYERS[target] >= LAYERS[part]:
            out.append(f"{where}:{line}: imports {name}; {part} (layer {LAYERS[part]}) may import only lower "
                       f"layers, {target} is layer {LAYERS[target]}")
    return out


def module_cycle(package: str) -> list[str]:
    """An import cycle between the modules of ``recframe/<package>/`` (lazy imports count), or ``[]``.

    Args:
        package: a subpackage of recframe (``config``).
    """
    folder = PACKAGE / package
    names = {f"recframe.{package}.{p.stem}": p for p in folder.glob("*.py") if p.name != "__init__.py"}
    graph = {name: {imported.rpartition(".")[0] if imported not in names else imported
                    for _, imported in imported_modules(path.read_text(encoding="utf-8"), name)} & set(names)
             for name, path in names.items()}

    def walk(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name):], name]
        for after in sorted(graph[name] - {name}):
            cycle = walk(after, [*path, name])
            if cycle:
                return cycle
        return []

    return next((cycle for name in sorted(names) if (cycle := walk(name, []))), [])


def test_every_part_has_a_layer() -> None:
    parts = {_part(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), f"give {sorted(parts - set(LAYERS))} a rank in LAYERS"


def test_imports_point_down() -> None:
    found = [v for path in sorted(PACKAGE.rglob("*.py"))
             for v in violations(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE))]
    assert not found, "\n".join(found)


def test_config_modules_import_each_other_without_a_cycle() -> None:
    assert module_cycle("config") == [], " -> ".join(module_cycle("config"))


def test_the_rules_catch_an_upward_import() -> None:
    upward = "import pytorch_lightning\nfrom recframe.training.module import RecModule\n"
    assert len(violations(upward, Path("data/x.py"))) == 2
    assert violations("from recframe.distributed.plan import ShardingPlan\n", Path("config/validate.py"))
    assert violations("def f():\n    from ..distributed import plan\n", Path("data/x.py"))  # lazy and relative
    assert violations("from recframe.data.checks import FILE_KINDS\n", Path("distributed/x.py"))  # a peer
    assert not violations("from recframe.config.problems import Problem\n", Path("data/checks.py"))

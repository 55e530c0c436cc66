"""The vocabulary is Enums (``recframe.vocab``): no sharding type or pooling is compared as a string literal.

The grep test parses every module of ``recframe/`` but ``recframe/vocab.py`` and fails on a
comparison (``==``, ``!=``, ``in``, ``not in``, ``case``) of a string literal that is a sharding
type (anywhere) or a pooling value (in a comparison that mentions pooling: ``"none"`` and
``"sum"`` are other vocabularies' words too), e.g. ``kind == "row_wise"``,
``pooling in ("sum", "mean")``, ``table.pooling != "none"``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import recframe
from recframe.config.schema import TablesConfig
from recframe.config.sharding import ShardingConfig
from recframe.distributed.plan import ShardingPlan
from recframe.vocab import Backend, Pooling, ShardingMode, ShardingType, Vocab

PACKAGE = Path(recframe.__file__).parent
SHARDING_WORDS = set(ShardingType.choices())
POOLING_WORDS = set(Pooling.choices())


def _literals(node: ast.expr) -> list[str]:
    """The string constants of a comparison operand (itself, or the elements of a tuple, list or set)."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]


def vocabulary_comparisons(source: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every comparison of a sharding-type or pooling literal in ``source``.

    Example:
        >>> vocabulary_comparisons('if p.pooling != "none" and k in ("row_wise",):\\n    pass')
        [(1, 'p.pooling != \\'none\\''), (1, "k in ('row_wise',)")]
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            words = [w for operand in (node.left, *node.comparators) for w in _literals(operand)]
        elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue):
            words = _literals(node.pattern.value)
        else:
            continue
        code = ast.unparse(node.pattern if isinstance(node, ast.match_case) else node)
        if any(w in SHARDING_WORDS for w in words) or ("pool" in code and any(w in POOLING_WORDS for w in words)):
            found.append((node.pattern.lineno if isinstance(node, ast.match_case) else node.lineno, code))
    return found


def test_the_grep_finds_what_it_should() -> None:
    bad = ['kind == "row_wise"', 'x.sharding_type in ("table_wise", "column_wise")', 'pooling != "none"',
           '"mean" == table.pooling', 'self.pooling not in ["sum", "mean"]']
    for code in bad:
        assert vocabulary_comparisons(code), code
    fine = ['kind == ShardingType.row_wise', 'norm == "none"', 'decay == "none"', 'x = "row_wise"',
            'pooling = Pooling.sum if a else "sum"']
    for code in fine:
        assert not vocabulary_comparisons(code), code


def test_no_string_comparison_of_sharding_types_or_pooling_outside_the_vocabulary() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "vocab.py":
            continue
        for line, code in vocabulary_comparisons(path.read_text()):
            offences.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {code}")
    assert not offences, "compare against recframe.vocab's Enums instead:\n" + "\n".join(offences)


@pytest.mark.parametrize("enum", Vocab.__subclasses__() + [ShardingMode])
def test_each_member_is_its_own_string(enum: type[Vocab]) -> None:
    """Names equal values, so OmegaConf (which reads names) and code (which compares values) agree, and a member
    equals, hashes, formats and reprs as the string users type."""
    for member in enum:
        assert member.name == member.value and member == member.value and hash(member) == hash(member.value)
        assert f"{member}" == str(member) == member.value and repr(member) == repr(member.value)
        assert json.loads(json.dumps({member: [member]})) == {member.value: [member.value]}


def test_sharding_mode_is_auto_the_types_and_manual() -> None:
    assert ShardingMode.choices() == ["auto", *ShardingType.choices(), "manual"]


def test_configs_keep_the_strings_users_type() -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(ShardingConfig),
                          {"type": "row_wise", "tables": {"t": {"sharding_type": "column_wise", "ranks": [0]}}})
    assert cfg.type is ShardingMode.row_wise and cfg.tables.t.sharding_type is ShardingType.column_wise
    tables = OmegaConf.merge(OmegaConf.structured(TablesConfig), {"backend": "torch", "specs": {"t": {
        "features": ["f"], "pooling": "mean"}}})
    assert tables.backend is Backend.torch and tables.specs.t.pooling is Pooling.mean
    assert "pooling: mean" in OmegaConf.to_yaml(tables) and "backend: torch" in OmegaConf.to_yaml(tables)


def test_plans_written_with_strings_still_load() -> None:
    """``sharding_plan.json`` from before the Enums: the same strings load, compare and save back unchanged."""
    saved = {"world_size": 2, "tables": {
        "t0": {"sharding_type": "row_wise", "ranks": [0, 1], "shard_sizes": None, "compute_kernel": "auto"},
        "t1": {"sharding_type": "data_parallel", "ranks": [0, 1], "shard_sizes": None, "compute_kernel": "torch"}}}
    plan = ShardingPlan.from_dict(json.loads(json.dumps(saved)))
    assert plan.tables["t0"].sharding_type == ShardingType.row_wise and plan.tables["t1"].rule.replicated
    assert json.loads(json.dumps(plan.to_dict())) == saved

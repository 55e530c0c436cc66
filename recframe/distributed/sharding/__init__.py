"""One rule object per sharding type (``<type>.py``); ``rule_for`` finds a type's rule.

Adding a sharding type is a member of ``recframe.vocab.ShardingType`` and one file here.

Example:
    >>> [rule.kind.value for rule in RULES.values()]
    ['table_wise', 'row_wise', 'column_wise', 'table_row_wise', 'row_wise_routed', 'data_parallel']
    >>> rule_for("data_parallel").replicated
    True
"""

from __future__ import annotations

from recframe.distributed.sharding.base import ShardingRule
from recframe.distributed.sharding.column_wise import COLUMN_WISE
from recframe.distributed.sharding.data_parallel import DATA_PARALLEL
from recframe.distributed.sharding.row_wise import ROW_WISE
from recframe.distributed.sharding.row_wise_routed import ROW_WISE_ROUTED
from recframe.distributed.sharding.table_row_wise import TABLE_ROW_WISE
from recframe.distributed.sharding.table_wise import TABLE_WISE
from recframe.vocab import ShardingType

RULES: dict[ShardingType, ShardingRule] = {
    rule.kind: rule for rule in sorted((TABLE_WISE, ROW_WISE, COLUMN_WISE, TABLE_ROW_WISE, ROW_WISE_ROUTED,
                                        DATA_PARALLEL), key=lambda rule: list(ShardingType).index(rule.kind))}


def rule_for(kind: ShardingType | str) -> ShardingRule:
    """The rule of a sharding type (a member or its string).

    Args:
        kind: the sharding type.

    Raises:
        ValueError: an unknown type.

    Example:
        >>> rule_for("column_wise").combine
        <Combine.concat: 'concat'>
    """
    return RULES[ShardingType(kind)]


__all__ = ["RULES", "rule_for"]

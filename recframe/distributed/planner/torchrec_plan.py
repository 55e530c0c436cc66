"""TorchRec's planner side by side: the table spec it is given, and its plan converted into a recframe plan.

``scripts/torchrec_plan.py`` (run in a TorchRec venv; it does not import recframe) reads ``torchrec_spec``'s
JSON and writes TorchRec's plan as JSON: per table its sharding type, compute kernel, ranks and shards
(``offsets`` and ``sizes`` as ``[row, column]``). ``from_torchrec`` maps it onto recframe's types:

- ``table_wise`` -> ``table_wise`` (its one rank);
- ``row_wise`` -> ``row_wise`` and ``table_row_wise`` -> ``table_row_wise``: the shards in row order, their
  rows as ``shard_sizes`` (TorchRec pads the last blocks: a shard of no rows is dropped);
- ``column_wise`` and ``table_column_wise`` -> ``column_wise``: the shards in column order, their columns as
  ``shard_sizes``; two column blocks on one rank (TorchRec allows it, recframe does not) become one, when
  they are adjacent;
- ``data_parallel`` -> ``data_parallel`` on every rank.

Other TorchRec types (``grid_shard``) have no recframe equivalent and raise ``ValueError``.

Example:
    >>> tr = {"world_size": 2, "tables": {"t": {"sharding_type": "row_wise", "ranks": [0, 1], "shards": [
    ...     {"rank": 1, "offsets": [5, 0], "sizes": [3, 4]}, {"rank": 0, "offsets": [0, 0], "sizes": [5, 4]}]}}}
    >>> p = from_torchrec(tr).tables["t"]
    >>> str(p.sharding_type), p.ranks, p.shard_sizes
    ('row_wise', [0, 1], [5, 3])
"""

from __future__ import annotations

from typing import Any

from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.embedding.config import TableConfig
from recframe.vocab import ShardingType

ROW_TYPES = {"row_wise": ShardingType.row_wise, "table_row_wise": ShardingType.table_row_wise}
COLUMN_TYPES = {"column_wise": ShardingType.column_wise, "table_column_wise": ShardingType.column_wise}


def torchrec_spec(tables: list[TableConfig], ids_per_feature: dict[str, float], world_size: int,
                  local_world_size: int, batch_size: int, hbm_gb: float, optimizer: str,
                  compute_device: str = "cuda") -> dict[str, Any]:
    """The JSON spec ``scripts/torchrec_plan.py`` plans.

    Args:
        tables: the tables.
        ids_per_feature: expected ids per sample of each feature (TorchRec's pooling factors).
        world_size: ranks.
        local_world_size: ranks per node.
        batch_size: samples per rank.
        hbm_gb: memory per rank (GB = 1e9 bytes).
        optimizer: the sparse optimizer's name (sgd, adagrad, rowwise_adagrad, adam, lamb).
        compute_device: TorchRec's compute device (``cuda``: plan for GPUs).

    Example:
        >>> t = TableConfig(name="t", num_embeddings=10, embedding_dim=4, feature_names=["f"])
        >>> torchrec_spec([t], {"f": 2.0}, 8, 8, 16, 80.0, "sgd")["tables"]
        [{'name': 't', 'rows': 10, 'dim': 4, 'features': ['f'], 'pooling_factors': [2.0]}]
    """
    return {"world_size": world_size, "local_world_size": local_world_size, "batch_size": batch_size,
            "hbm_gb": hbm_gb, "compute_device": compute_device, "optimizer": optimizer,
            "tables": [{"name": t.name, "rows": t.num_embeddings, "dim": t.embedding_dim,
                        "features": list(t.feature_names),
                        "pooling_factors": [float(ids_per_feature[f]) for f in t.feature_names]}
                       for t in tables]}


def _blocks(table: dict[str, Any], axis: int) -> tuple[list[int], list[int]]:
    """Ranks and sizes of a table's shards along ``axis`` (0 rows, 1 columns), in order, adjacent blocks of one rank
    merged and empty ones dropped."""
    ranks: list[int] = []
    sizes: list[int] = []
    for shard in sorted(table["shards"], key=lambda s: s["offsets"][axis]):
        size = int(shard["sizes"][axis])
        if size == 0:
            continue
        if ranks and ranks[-1] == shard["rank"]:
            sizes[-1] += size
            continue
        ranks.append(int(shard["rank"]))
        sizes.append(size)
    return ranks, sizes


def from_torchrec(data: dict[str, Any]) -> ShardingPlan:
    """A recframe plan from ``scripts/torchrec_plan.py``'s JSON (mapping: the module docstring).

    Args:
        data: the parsed JSON: ``world_size`` and ``tables``.
    """
    world = int(data["world_size"])
    out = {}
    for name, table in data["tables"].items():
        kind = table["sharding_type"]
        if kind == ShardingType.table_wise:  # TorchRec's names of these two are ours
            out[name] = TablePlacement(ShardingType.table_wise, [int(table["shards"][0]["rank"])])
        elif kind == ShardingType.data_parallel:
            out[name] = TablePlacement(ShardingType.data_parallel, list(range(world)))
        elif kind in ROW_TYPES or kind in COLUMN_TYPES:
            ranks, sizes = _blocks(table, 0 if kind in ROW_TYPES else 1)
            if len(set(ranks)) != len(ranks):
                raise ValueError(f"table {name!r} ({kind}): a rank holds two blocks that are not adjacent: {ranks}")
            out[name] = TablePlacement(ROW_TYPES.get(kind) or COLUMN_TYPES[kind], ranks, sizes)
        else:
            raise ValueError(f"table {name!r}: TorchRec sharding type {kind!r} has no recframe equivalent")
    return ShardingPlan(world, out)

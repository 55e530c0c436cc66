"""``shard_model``: swap every EmbeddingBagCollection of a model for its ShardedEmbeddingBagCollection.

Example:
    >>> shard_model(model, plan, process_group=None, device=torch.device("cuda", local_rank))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from recframe.distributed.plan import ShardingPlan
from recframe.distributed.sharded import ShardedEmbeddingBagCollection
from recframe.embedding.collection import EmbeddingBagCollection

if TYPE_CHECKING:  # (qcomms imports comms, which needs sharded's imports first)
    from recframe.distributed.qcomms import CommsPrecision


def shard_model(model: nn.Module, plan: ShardingPlan, process_group: dist.ProcessGroup | None = None,
                device: torch.device | str | None = None, check_ids: bool = True,
                local_world_size: int | None = None, gradient_division: bool = True,
                comms: CommsPrecision | None = None) -> nn.Module:
    """Replace every EmbeddingBagCollection inside ``model`` by its ShardedEmbeddingBagCollection, in place.

    Call it on every rank of ``process_group`` (collective), with the same model values and plan.

    Args:
        model: a model holding EmbeddingBagCollections as attributes (or one itself).
        plan: the placement of every table of every collection (table names are unique in a model).
        process_group: the group (None = the default group).
        device: where the shards live; default each collection's device.
        check_ids: check ids of ``error`` tables on the sending rank.
        local_world_size: ranks per node (table_row_wise).
        gradient_division: divide the shards' gradients by the world size (see the module docstring).
        comms: the pooled all-to-all's wire formats (``qcomms.CommsPrecision``; default fp32).

    Returns:
        ``model`` (or the sharded collection when ``model`` is an EmbeddingBagCollection).

    Raises:
        ValueError: listing every problem of the plan (missing or unknown tables, bad placements).
    """
    found = [(name, m) for name, m in model.named_modules(remove_duplicate=False)
             if isinstance(m, EmbeddingBagCollection)]
    tables = [t for _, m in {id(m): (n, m) for n, m in found}.values() for t in m.tables]
    shapes = {t.name: (t.num_embeddings, t.embedding_dim) for t in tables}
    problems = plan.group_problems(shapes, dist.get_world_size(process_group), local_world_size)
    names = {t.name for t in tables}
    problems += [f"the sharding plan places {n!r}, which is not a table of the model" for n in plan.tables
                 if n not in names]
    if not found:
        problems.append(f"{type(model).__name__} holds no EmbeddingBagCollection")
    if problems:
        raise ValueError(f"cannot shard the model ({len(problems)} problems):\n  " + "\n  ".join(problems))
    done: dict[int, ShardedEmbeddingBagCollection] = {}
    for name, module in found:
        if id(module) not in done:
            done[id(module)] = ShardedEmbeddingBagCollection.from_collection(
                module, plan, process_group, device, check_ids, local_world_size, gradient_division, comms)
        if name == "":
            return done[id(module)]
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, done[id(module)])
    return model

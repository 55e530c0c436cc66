"""Model parallelism: sharding plans, the planner, all-to-all communication, sharded modules.

``shard_model(model, plan, process_group)`` swaps every EmbeddingBagCollection of a model for a
``ShardedEmbeddingBagCollection`` (see ``recframe.distributed.sharded`` for the semantics).
"""

from recframe.distributed.plan import ShardingPlan, TablePlacement
from recframe.distributed.shard_model import shard_model
from recframe.distributed.sharded import ShardedEmbeddingBagCollection
from recframe.distributed.types import LocalShard, ShardSpec

__all__ = ["LocalShard", "ShardSpec", "ShardedEmbeddingBagCollection", "ShardingPlan", "TablePlacement",
           "shard_model"]

"""ShardedStrategy: Lightning's DDP for the dense towers, model parallelism for the embedding tables.

The embedding collections are sharded over the ranks by ``RecModule.configure_model`` (Lightning
calls it once the process group is up). This strategy then wraps the model in DDP with every
embedding parameter and buffer ignored: DDP all-reduces only the dense gradients, and it does not
broadcast rank 0's table shards over the other ranks' (which hold different rows). The tables are
updated by their fused optimizers inside the backward pass, through the sharded modules' own
collectives.

Example:
    >>> strategy = ShardedStrategy(process_group_backend="gloo")  # doctest: +SKIP
    >>> trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy)  # doctest: +SKIP
"""

from __future__ import annotations

from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from recframe.training.module import embedding_collections


def embedding_state_names(model: nn.Module) -> list[str]:
    """Fully qualified names of every parameter and buffer inside an embedding collection."""
    names: list[str] = []
    for path, collection in embedding_collections(model).items():
        prefix = f"{path}." if path else ""
        names += [prefix + n for n, _ in collection.named_parameters()]
        names += [prefix + n for n, _ in collection.named_buffers()]
    return names


class ShardedStrategy(DDPStrategy):
    """DDP over the dense parameters only; the sharded embedding collections are left to themselves."""

    strategy_name = "recframe_sharded"

    def _setup_model(self, model: nn.Module) -> DistributedDataParallel:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, embedding_state_names(model))
        return super()._setup_model(model)

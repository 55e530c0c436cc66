"""Dense towers, feature interactions, multi-task heads, and the model zoo built from them.

Models take a ``recframe.sparse.Batch`` and return logits. Each owns its embedding collection(s)
as attributes (``embeddings``; also ``wide_embeddings`` for DeepFM/WideDeep, ``user_embeddings``
and ``item_embeddings`` for TwoTower) and only calls them as ``collection(kjt) -> KeyedTensor``, so
a sharder can replace them. Models know nothing of Lightning or sharding.

Example:
    >>> from recframe.models import MLP, DotInteraction
    >>> MLP(13, [64, 16]).out_features
    16
"""

from recframe.models.deepfm import DeepFM
from recframe.models.dlrm import DLRM, DLRM_DCN
from recframe.models.heads import MultiTaskHead, Task, TaskLosses, multi_task_loss
from recframe.models.interactions import CrossNet, DotInteraction, FMInteraction, LowRankCrossNet
from recframe.models.towers import MLP, WideLinear, wide_tables
from recframe.models.two_tower import TwoTower, recall_at_k
from recframe.models.wide_deep import WideDeep
from recframe.models.zoo import MODELS, CheckContext, ModelContext, ModelEntry, TaskConfig, register_model

__all__ = [
    "DLRM",
    "DLRM_DCN",
    "MLP",
    "MODELS",
    "CheckContext",
    "CrossNet",
    "DeepFM",
    "DotInteraction",
    "FMInteraction",
    "LowRankCrossNet",
    "ModelContext",
    "ModelEntry",
    "MultiTaskHead",
    "Task",
    "TaskConfig",
    "TaskLosses",
    "TwoTower",
    "WideDeep",
    "WideLinear",
    "multi_task_loss",
    "recall_at_k",
    "register_model",
    "wide_tables",
]

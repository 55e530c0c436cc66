"""The model zoo: each model's config schema, builder and config checks, registered by the model's own module.

A model module ends with its schema (a dataclass: the ``model`` config group's node, ``name``
first) and a builder registered in ``MODELS``. The builder gets its config node and a
``ModelContext`` (the run's dense width, tasks and embedding collections, made by the training
layer, which knows the config and the devices); ``check`` returns the model's own config problems
before anything is built. Hydra's store, the config checks, the model and objective builders all
read ``MODELS``: adding a model is its module (imported in ``recframe/models/__init__.py``) and its
YAML in ``configs/model/``.

Example:
    >>> import recframe.models
    >>> sorted(MODELS.names())
    ['deepfm', 'dlrm', 'dlrm_dcn', 'two_tower', 'wide_deep']
    >>> MODELS["two_tower"].retrieval, MODELS["dlrm"].schema.__name__
    (True, 'DLRMConfig')
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from recframe.models.heads import Task
from recframe.registry import Registry

ConfigProblem = tuple[str, str, str]  # (key, what is wrong, how to fix it: "" when obvious)


@dataclass
class TaskConfig:
    """One prediction target: a label column (a field of the CTR models' schemas)."""

    name: str = "click"  # task name: train/loss_<name>; val/<name>/auc with several tasks
    weight: float = 1.0  # weight of its loss in the total loss


def one_task() -> list[TaskConfig]:
    """The default task list of a CTR model's schema."""
    return [TaskConfig()]


@dataclass(frozen=True)
class ModelContext:
    """What a builder needs besides its config node.

    Args:
        num_dense_features: dense columns of a batch.
        tasks: the tasks (none for retrieval models).
        embeddings: ``features -> collection`` of the tables serving those features (None: all tables).
        wide_embeddings: ``out_features -> collection`` of one-row-per-id wide tables (``towers.wide_tables``).
    """

    num_dense_features: int
    tasks: list[Task]
    embeddings: Callable[[list[str] | None], nn.Module]
    wide_embeddings: Callable[[int], nn.Module]


@dataclass(frozen=True)
class CheckContext:
    """What a model's config check sees of the rest of the config.

    Args:
        dims: embedding dim of every pooled table, by table name.
        sparse_features: the run's sparse features.
        num_dense_features: the run's dense features (0: a table of categorical columns only).
    """

    dims: dict[str, int]
    sparse_features: list[str]
    num_dense_features: int = 0


@dataclass(frozen=True)
class ModelEntry:
    """A model of the zoo.

    Args:
        schema: its config dataclass (registered with Hydra as ``model/<name>_schema``).
        build: ``(config node, context) -> model``.
        check: ``(config node, context) -> problems`` of the model's own keys (none: no check).
        retrieval: trained with the in-batch retrieval objective on retrieval data (else CTR).
        pooled_in_autocast_dtype: the model's first use of its pooled embeddings (``embeddings``, not
            ``wide_embeddings``) is a cast to autocast's dtype under autocast, so ``tables.output_dtype=auto``
            lets the collection write them in that dtype (the same numbers, no cast kernels); models that use
            them in fp32 (an FM's sums of squares) keep fp32 outputs. A bool, or ``(config node, number of
            dense features) -> bool`` where it depends on the model's shape.
    """

    schema: type
    build: Callable[[Any, ModelContext], nn.Module]
    check: Callable[[Any, CheckContext], list[ConfigProblem]] | None = None
    retrieval: bool = False
    pooled_in_autocast_dtype: bool | Callable[[Any, int], bool] = False

    def reads_pooled_in_autocast_dtype(self, node: Any, num_dense_features: int) -> bool:
        """``pooled_in_autocast_dtype`` for this config node and number of dense features."""
        flag = self.pooled_in_autocast_dtype
        return bool(flag(node, num_dense_features)) if callable(flag) else flag

    def problems(self, node: Any, context: CheckContext) -> list[ConfigProblem]:
        """The model's own config problems (none without a check)."""
        return self.check(node, context) if self.check is not None else []


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, schema: type, check: Callable[[Any, CheckContext], list[ConfigProblem]] | None = None,
                   retrieval: bool = False, pooled_in_autocast_dtype: bool | Callable[[Any, int], bool] = False,
                   ) -> Callable[[Callable[[Any, ModelContext], nn.Module]], Any]:
    """Register the decorated builder as model ``name`` (``model.name`` in configs).

    Args:
        name: the model's name.
        schema: its config dataclass.
        check: its config check (None: none).
        retrieval: trained with the retrieval objective.
        pooled_in_autocast_dtype: see ``ModelEntry``.

    Example:
        >>> @register_model("my_model", schema=TaskConfig)  # doctest: +SKIP
        ... def build(node, ctx): return MyModel(ctx.embeddings(None), ctx.num_dense_features)
    """
    def decorate(build: Callable[[Any, ModelContext], nn.Module]) -> Callable[[Any, ModelContext], nn.Module]:
        MODELS.add(name, ModelEntry(schema=schema, build=build, check=check, retrieval=retrieval,
                                    pooled_in_autocast_dtype=pooled_in_autocast_dtype))
        return build

    return decorate


def same_dim_problems(model: str, reason: str, dims: dict[str, int]) -> list[ConfigProblem]:
    """The problem of a model that needs one embedding dim for all tables, when they differ (else none).

    Args:
        model: the model's name.
        reason: what needs the common dim (``FM interaction``).
        dims: embedding dim by table.
    """
    if len(set(dims.values())) <= 1:
        return []
    common = max(set(dims.values()), key=list(dims.values()).count)
    odd = {n: d for n, d in dims.items() if d != common}
    return [("tables", f"model {model} ({reason}) needs one embedding dim for all tables; most have {common}, "
             f"these differ: {odd}", "set tables.embedding_dim and drop per-table dims")]


def suggestion(word: str, choices: list[str]) -> str:
    """``did you mean 'x'?`` for the closest of ``choices``, else the list of them (a config problem's fix).

    Example:
        >>> suggestion("usr", ["user", "item"])
        "did you mean 'user'?"
    """
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {found[0]!r}?" if found else f"known: {choices}"

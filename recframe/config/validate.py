"""Semantic checks of a composed config: what the schemas cannot see (cross-references, sizes).

Every problem is collected, with its key path and a fix, before anything is built. These checks
need nothing but the config; the checks that need data files or the planner belong to their
owners (``recframe.data.checks``, the planner's in ``recframe.training.checks``), which the
application passes in as ``owner_checks`` so that one call lists every problem.

Example:
    >>> from recframe.config.compose import compose_config
    >>> validate(compose_config(["+experiment=dlrm"]))
    []
    >>> [p.key for p in validate(compose_config(["+experiment=dlrm", "data.batch_size=0"]))]
    ['data.batch_size']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from recframe.config.problems import Check, Problem
from recframe.config.resolve import log_period, sparse_optimizer, stats_period, table_configs
from recframe.models.zoo import MODELS, CheckContext, suggestion
from recframe.vocab import Pooling, ShardingMode

PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "64-true")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # log_level: the logging module's level names
RETRIEVAL_DATA = ("synthetic_retrieval", "movielens_retrieval")  # the data kinds of retrieval models (and only theirs)


def _check_features_and_tables(cfg: DictConfig) -> list[Problem]:
    out: list[Problem] = []
    sparse, dense = list(cfg.features.sparse), list(cfg.features.dense)
    for name in {f for f in sparse if sparse.count(f) > 1} | {f for f in dense if dense.count(f) > 1}:
        out.append(Problem("features", f"feature {name!r} is listed twice"))
    for name in set(sparse) & set(dense):
        out.append(Problem("features", f"feature {name!r} is both dense and sparse"))
    owner: dict[str, str] = {}
    served = {f for table in table_configs(cfg) for f in table.feature_names}
    unserved = [f for f in sparse if f not in served]
    for table in table_configs(cfg):
        key = f"tables.specs.{table.name}"
        for feature in table.feature_names:
            if feature not in sparse:
                hint = suggestion(feature, unserved) if unserved else suggestion(feature, sparse)
                out.append(Problem(f"{key}.features", f"unknown feature {feature!r}", hint))
            elif feature in owner:
                out.append(Problem(f"{key}.features", f"feature {feature!r} is already served by table "
                                   f"{owner[feature]!r}; a feature belongs to one table"))
            owner.setdefault(feature, table.name)
        out.extend(Problem(key, p.removeprefix(f"table {table.name!r}: ")) for p in table.problems())
    for feature in sparse:
        if feature not in owner:
            out.append(Problem("tables.specs", f"sparse feature {feature!r} is served by no table",
                               "add a table for it, or remove it from features.sparse"))
    out.extend(Problem("optim.sparse", p) for p in sparse_optimizer(cfg).problems())
    return out


def _check_model(cfg: DictConfig) -> list[Problem]:
    """The tasks, then the model's own check (its zoo entry's)."""
    out: list[Problem] = []
    model = cfg.model
    if "tasks" in model:
        names = [t.name for t in model.tasks]
        if not names:
            out.append(Problem("model.tasks", "needs at least one task"))
        if len(set(names)) != len(names):
            out.append(Problem("model.tasks", f"task names must be unique, got {names}"))
    if model.name not in MODELS:
        return [*out, Problem("model.name", f"unknown model {model.name!r}", suggestion(model.name, MODELS.names()))]
    dims = {t.name: t.embedding_dim for t in table_configs(cfg) if t.pooling != Pooling.none}
    context = CheckContext(dims=dims, sparse_features=list(cfg.features.sparse),
                           num_dense_features=len(cfg.features.dense))
    out += [Problem(key, message, fix) for key, message, fix in MODELS[model.name].problems(model, context)]
    return out


def _check_data(cfg: DictConfig) -> list[Problem]:
    out: list[Problem] = []
    data, model = cfg.data, cfg.model
    retrieval = model.name in MODELS and MODELS[model.name].retrieval
    if retrieval and data.kind not in RETRIEVAL_DATA:
        out.append(Problem("data", f"model {model.name} needs data={' or '.join(RETRIEVAL_DATA)}, got data={data.kind}",
                           f"add data={RETRIEVAL_DATA[0]}"))
    if not retrieval and data.kind in RETRIEVAL_DATA:
        models = [name for name, entry in MODELS.items() if entry.retrieval]
        out.append(Problem("data", f"data={data.kind} is for {models}, not model {model.name}", "use data=synthetic"))
    if data.batch_size < 1:
        out.append(Problem("data.batch_size", f"must be >= 1, got {data.batch_size}"))
    if data.kind == "synthetic":
        n = len(cfg.features.sparse)
        if len(data.ids_per_feature) not in (1, n) or min(data.ids_per_feature, default=0) < 0:
            out.append(Problem("data.ids_per_feature", f"give one count >= 0 for all features or one per sparse "
                               f"feature ({n}), got {list(data.ids_per_feature)}"))
    if data.kind.startswith("synthetic") and cfg.trainer.max_steps <= 0:
        out.append(Problem("trainer.max_steps", "synthetic data is an endless stream: set trainer.max_steps > 0"))
    return out


def _check_trainer(cfg: DictConfig) -> list[Problem]:
    out: list[Problem] = []
    trainer = cfg.trainer
    if trainer.precision not in PRECISIONS:
        out.append(Problem("trainer.precision", f"unknown precision {trainer.precision!r}",
                           suggestion(trainer.precision, list(PRECISIONS))))
    if trainer.val_check_interval is not None and trainer.val_check_interval < 1:
        out.append(Problem("trainer.val_check_interval", f"must be a number of steps >= 1, got "
                           f"{trainer.val_check_interval}"))
    try:
        log_period(trainer.log_every_n_steps, trainer.max_steps)
    except ValueError as error:
        out.append(Problem("trainer.log_every_n_steps", str(error), "e.g. trainer.log_every_n_steps=auto"))
    try:
        stats_period(cfg.logger.table_stats_every_n_steps, trainer.max_steps)
    except ValueError as error:
        out.append(Problem("logger.table_stats_every_n_steps", str(error),
                           "e.g. logger.table_stats_every_n_steps=auto"))
    if trainer.early_stopping_patience < 0:
        out.append(Problem("trainer.early_stopping_patience", f"must be >= 0 (0: never stop early), got "
                           f"{trainer.early_stopping_patience}"))
    if trainer.monitor != "auto" and not trainer.monitor.startswith("val/"):
        out.append(Problem("trainer.monitor", f"must be auto or a validation key (val/...), got {trainer.monitor!r}",
                           "e.g. trainer.monitor=val/logloss"))
    checkpoint = cfg.checkpoint
    unknown = [str(t) for t in cfg.logger.projector.tables if str(t) not in cfg.tables.specs]
    if unknown:
        out.append(Problem("logger.projector.tables", f"no such tables {unknown}",
                           suggestion(unknown[0], [str(k) for k in cfg.tables.specs])))
    if cfg.logger.projector.rows < 1:
        out.append(Problem("logger.projector.rows", f"must be >= 1, got {cfg.logger.projector.rows}"))
    if checkpoint.every_n_steps < 0:
        out.append(Problem("checkpoint.every_n_steps", f"must be >= 0, got {checkpoint.every_n_steps}"))
    if checkpoint.keep_last < 1:
        out.append(Problem("checkpoint.keep_last", f"must keep at least 1 checkpoint, got {checkpoint.keep_last}"))
    if checkpoint.sigterm_check_every_n_steps < 1:
        out.append(Problem("checkpoint.sigterm_check_every_n_steps",
                           f"must be >= 1, got {checkpoint.sigterm_check_every_n_steps}"))
    if str(cfg.log_level).upper() not in LOG_LEVELS:
        out.append(Problem("log_level", f"unknown level {cfg.log_level!r}; choose one of {list(LOG_LEVELS)}",
                           suggestion(str(cfg.log_level).upper(), list(LOG_LEVELS))))
    for key in ("timeout_s", "startup_timeout_s"):
        if cfg.distributed[key] <= 0:
            out.append(Problem(f"distributed.{key}", f"must be > 0 seconds, got {cfg.distributed[key]}",
                               f"e.g. distributed.{key}=300"))
    return out


def _check_sharding(cfg: DictConfig) -> list[Problem]:
    """The sharding config names existing tables (types: the schema's Enums; ranks and plans: the planner's checks)."""
    out: list[Problem] = []
    s, tables = cfg.sharding, [t.name for t in table_configs(cfg)]
    for name, c in s.constraints.items():
        key = f"sharding.constraints.{name}"
        if name not in tables:
            out.append(Problem(key, f"unknown table {name!r}", suggestion(str(name), tables)))
        if c.ids_per_sample is not None and c.ids_per_sample <= 0:
            out.append(Problem(f"{key}.ids_per_sample", f"must be > 0, got {c.ids_per_sample}"))
    if s.type != ShardingMode.manual and s.tables:
        out.append(Problem("sharding.tables", f"a manual plan is only read with sharding.type=manual, not {s.type}",
                           "set sharding.type=manual or drop sharding.tables"))
    t = s.topology
    for key in ("memory_per_rank_gb", "local_world_size", "intra_node_bw_gbps", "inter_node_bw_gbps", "hbm_bw_gbps",
                "ddr_bw_gbps"):
        if t[key] is not None and t[key] <= 0:
            out.append(Problem(f"sharding.topology.{key}", f"must be > 0, got {t[key]}"))
    if not 0 <= t.reserved_fraction < 1:
        out.append(Problem("sharding.topology.reserved_fraction", f"must be in [0, 1), got {t.reserved_fraction}"))
    if cfg.tables.row_cap is not None and cfg.tables.row_cap < 1:
        out.append(Problem("tables.row_cap", f"must be >= 1 (or null: no cap), got {cfg.tables.row_cap}"))
    return out


def _interpolation_problems(cfg: DictConfig) -> list[Problem]:
    """Interpolations (``${data.num_users}``) that do not resolve; Hydra's own (``${hydra:...}``) are skipped.

    A resolver's error (a feature spec file that is not YAML, read by four keys' interpolations) is reported
    once, at the first key, naming the others.
    """
    out: list[Problem] = []
    causes: dict[str, list[tuple[str, str]]] = {}  # a resolver's error -> the (key, interpolation)s it failed

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str) and "${" in node and "${hydra:" not in node and "${now:" not in node:
            try:
                OmegaConf.select(cfg, path, throw_on_resolution_failure=True)
            except Exception as error:  # OmegaConf raises several error types for a bad interpolation
                text = str(error).splitlines()[0]
                cause = re.sub(r"^\w+ raised while resolving interpolation: ", "", text)
                if cause == text:  # not a resolver's error (a key that does not exist): each key's own
                    out.append(Problem(path, f"{node} does not resolve: {text}"))
                else:
                    causes.setdefault(cause, []).append((path, node))

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    for cause, [(path, node), *others] in causes.items():
        also = f" (read by {', '.join(key for key, _ in others)} too)" if others else ""
        out.append(Problem(path, f"{node} does not resolve: {cause}{also}"))
    return out


def validate(cfg: DictConfig, owner_checks: Sequence[Check] = ()) -> list[Problem]:
    """Every semantic problem of a composed ``recframe train`` config (empty when it is fine).

    Interpolations that do not resolve are reported alone: every other check reads those values.

    Args:
        cfg: the composed config (unresolved interpolations are fine).
        owner_checks: the checks of the config's other owners (data files, the planner), run after
            config's own (``recframe.training.checks`` passes them).
    """
    unresolved = _interpolation_problems(cfg)
    if unresolved:
        return unresolved  # the other checks read those values
    return [*_check_features_and_tables(cfg), *_check_model(cfg), *_check_data(cfg), *_check_trainer(cfg),
            *_check_sharding(cfg), *(problem for check in owner_checks for problem in check(cfg))]

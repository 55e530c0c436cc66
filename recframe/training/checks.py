"""A run's whole-config validation: config's own checks, the data source's and the planner's, gathered.

``recframe.config`` checks what the config alone can say and reads no files; the checks that
need data files are ``recframe.data.checks``'s and those that need the planner (the world size
a run plans for, a manual plan) are :func:`planner_problems` here, next to the application that
knows both. ``job_problems`` runs them all on the config Hydra composed for a job, so ``recframe train``
lists every problem at once before anything is built; ``find_problems`` composes a command line itself (where
Hydra's composition fails: it finds each bad override). ``compose_config`` composes a run config with the
resolvers that read data files (``${feature_map:DIR,key}``, ``recframe.data.resolvers``).

Example:
    >>> find_problems(["+experiment=dlrm"])
    []
    >>> [(p.key, p.message) for p in find_problems(["+experiment=dlrm", "data=criteo_tsv"])][:1]
    [('data.path', 'is not set')]
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from recframe.config import compose
from recframe.config.problems import Check, Problem
from recframe.config.resolve import table_configs
from recframe.config.validate import validate
from recframe.data.catalog import DATA_SOURCES
from recframe.data.checks import data_source_problems
from recframe.data.resolvers import register_resolvers
from recframe.errors import RecframeError, one_line
from recframe.models.zoo import suggestion
from recframe.storage_options import apply_options, option_problems
from recframe.training.dense_optimizers import DENSE_OPTIMIZERS
from recframe.training.planning import manual_plan, planned_world
from recframe.vocab import ShardingMode


def planner_problems(cfg: DictConfig) -> list[Problem]:
    """The sharding settings against the world size the run plans for; a manual plan is complete and valid.

    Args:
        cfg: the composed run config.

    Example:
        >>> cfg = compose_config(["+experiment=dlrm", "sharding=manual_example", "world_size=1"])
        >>> planner_problems(cfg)[0].message.startswith("the manual plan places shards on ranks up to 1")
        True
    """
    out: list[Problem] = []
    s = cfg.sharding
    world, _ = planned_world(cfg)
    if world < 1:
        out.append(Problem("world_size", f"must be >= 1, got {world}"))
    for name, c in s.constraints.items():
        if c.ranks is not None and (not c.ranks or not all(0 <= r < world for r in c.ranks)):
            out.append(Problem(f"sharding.constraints.{name}.ranks", f"pinned ranks must be a non-empty list of "
                               f"ranks in [0, {world}), got {list(c.ranks)}", "plan for more ranks with world_size=N"))
    if s.type == ShardingMode.manual:
        shapes = {t.name: (t.num_embeddings, t.embedding_dim) for t in table_configs(cfg)}
        top = max((r for p in s.tables.values() for r in p.ranks), default=0)
        if top >= world:
            out.append(Problem("sharding.tables", f"the manual plan places shards on ranks up to {top}, but the world "
                               f"has {world} rank(s)", f"plan for world_size={top + 1} (or trainer.devices)"))
        out.extend(Problem("sharding.tables", p) for p in manual_plan(cfg, max(world, top + 1)).problems(shapes))
    return out


def builder_problems(cfg: DictConfig) -> list[Problem]:
    """The names the builders look up in their registries: ``data.kind`` (``DATA_SOURCES``) and
    ``optim.dense.name`` (``DENSE_OPTIMIZERS``); config's own check covers ``model.name``, the schemas the Enums.

    Args:
        cfg: the composed run config.

    Example:
        >>> [(p.key, p.message) for p in builder_problems(compose_config(["+experiment=dlrm",
        ...                                                               "optim.dense.name=adamm"]))]
        [('optim.dense.name', "unknown dense optimizer 'adamm'")]
    """
    out = []
    for key, registry in (("data.kind", DATA_SOURCES), ("optim.dense.name", DENSE_OPTIMIZERS)):
        name = str(OmegaConf.select(cfg, key))
        if name not in registry:
            out.append(Problem(key, f"unknown {registry.kind} {name!r}", suggestion(name, registry.names())))
    return out


def storage_problems(cfg: DictConfig) -> list[Problem]:
    """``storage.options``: protocols fsspec knows, each mapped to its options (``recframe.storage_options``).

    Args:
        cfg: the composed run config.

    Example:
        >>> [p.key for p in storage_problems(compose_config(["+experiment=dlrm", "+storage.options.s4.key=k"]))]
        ['storage.options.s4']
    """
    return [Problem(key, message, fix) for key, message, fix in option_problems(cfg.storage.options)]


def apply_storage_options(cfg: DictConfig) -> None:
    """Give every fsspec filesystem this process opens from now on ``cfg.storage.options`` (before anything reads).

    Args:
        cfg: the composed run config.
    """
    apply_options(OmegaConf.to_container(cfg.storage.options, resolve=True))  # type: ignore[arg-type]


def _reported(check: Check, key: str) -> Check:
    """``check``, with a RecframeError it raises (a data file that cannot be read) turned into a problem of ``key``."""

    def run(cfg: DictConfig) -> list[Problem]:
        try:
            return check(cfg)
        except RecframeError as error:
            return [Problem(key, one_line(error))]

    return run


def _known_data_kind(cfg: DictConfig) -> list[Problem]:
    """The data source's checks, for a known ``data.kind`` (an unknown one is builder_problems')."""
    return _reported(data_source_problems, "data.path")(cfg) if cfg.data.kind in DATA_SOURCES else []


# after config's own checks
OWNER_CHECKS: tuple[Check, ...] = (storage_problems, builder_problems, _known_data_kind, planner_problems)


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose a run config as ``recframe train`` will, with the resolvers that read data files.

    Args:
        overrides: Hydra overrides (``+experiment=dlrm``, ``data.path=...``).
        config_name: the root config.
    """
    register_resolvers()
    cfg = compose.compose_config(overrides, config_name)
    apply_storage_options(cfg)
    return cfg


def check_config(cfg: DictConfig) -> list[Problem]:
    """Every problem of a composed run config (config's checks, then the data source's and the planner's).

    Args:
        cfg: the composed config (unresolved interpolations are reported, not raised).

    Example:
        >>> check_config(compose_config(["+experiment=dlrm", "world_size=2"]))
        []
    """
    register_resolvers()
    apply_storage_options(cfg)
    return validate(cfg, OWNER_CHECKS)


def job_problems(cfg: DictConfig, overrides: list[str]) -> list[Problem]:
    """Every problem of a job's config as Hydra composed it: keys ``+`` added that no schema declares, then
    :func:`check_config`'s (``recframe train`` checks each job so, ``recframe.training.compose_once``).

    Args:
        cfg: the job's config (without Hydra's node).
        overrides: the overrides it was composed with.

    Example:
        >>> overrides = ["+experiment=dlrm", "+trainer.max_step=5", "trainer.max_steps=-5"]
        >>> [p.key for p in job_problems(compose_config(overrides), overrides)]
        ['+trainer.max_step', 'trainer.max_steps']
    """
    return compose.added_key_problems(overrides, cfg) + check_config(cfg)


def find_problems(args: list[str], config_name: str = "train", fails: bool = False) -> list[Problem]:
    """Every problem of a command line's config: composition errors, then every owner's checks.

    Args:
        args: the command line after the subcommand (overrides and Hydra flags).
        config_name: the root config.
        fails: Hydra's composition of these overrides failed (``recframe.config.compose.find_problems``).
    """
    register_resolvers()
    return compose.find_problems(args, OWNER_CHECKS, config_name, prepare=apply_storage_options, fails=fails)

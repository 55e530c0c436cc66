"""Compose a config the way ``recframe train`` will, and report every problem at once.

Hydra stops at the first bad override. Before handing the command line to Hydra, recframe
composes it itself: if that fails, it retries override by override to find each bad one, then
runs the semantic checks (``recframe.config.validate``, with the owners' checks the application
passes in) on what does compose. The result is one message listing every problem with its key
path and, where one exists, a suggestion (``recframe.config.problems``).

A ``+key=value`` (or ``++key=value``) that adds a key the schema does not have is an error too: Hydra
would accept it silently (``+trainer.max_step=5`` trains for the default number of steps). Keys may be
added only inside the free-form mappings of the config, the dicts of the schemas (``tables.specs``,
``sharding.constraints``, ``sharding.tables``, ``data.columns`` of ``data=tabular``), and under ``hydra``.

Example:
    >>> problems = find_problems(["+experiment=dlrm", "trainer.max_step=5"])
    >>> problems[0].key, problems[0].hint
    ('trainer.max_step', "did you mean 'trainer.max_steps'?")
    >>> [(p.key, p.message) for p in find_problems(["+experiment=dlrm", "+trainer.max_step=5"])]
    [('+trainer.max_step', 'no such key: + adds keys only inside free-form mappings')]
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from omegaconf import DictConfig, OmegaConf

from recframe.config.problems import Check, Problem
from recframe.config.store import CONFIG_DIR, CONFIG_SEARCH_PATH, register_schemas
from recframe.config.validate import validate

# Command-line flags of Hydra's own that take a value (they are not overrides).
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
_FLAGS_WITH_OPTIONAL_VALUE = {"--info", "-i"}


def config_dir(args: list[str]) -> str | None:
    """The user's config folder of a command line (``--config-dir DIR``, ``-cd DIR``, ``--config-dir=DIR``), if any.

    Example:
        >>> config_dir(["--config-dir", "my_configs", "+experiment=mine"]), config_dir(["+experiment=dlrm"])
        ('my_configs', None)
    """
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config-dir="):
            return arg.split("=", 1)[1]
    return None


def split_command_line(args: list[str]) -> tuple[list[str], bool]:
    """Separate Hydra's flags from overrides.

    Returns:
        The overrides, and whether the command line only asks for help (nothing to check).
    """
    overrides: list[str] = []
    help_only = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--help", "-h", "--hydra-help"):
            help_only = True
        elif arg in _FLAGS_WITH_VALUE:
            i += 1
        elif arg in _FLAGS_WITH_OPTIONAL_VALUE:
            if i + 1 < len(args) and not args[i + 1].startswith("-") and "=" not in args[i + 1]:
                i += 1
        elif not arg.startswith("-"):
            overrides.append(arg)
        i += 1
    return overrides, help_only


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Replace each sweep (``a=1,2``) by its first value: multirun jobs share their keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides), strict=True):
        if parsed.is_sweep_override():
            first = next(iter(parsed.sweep_string_iterator()))
            out.append(f"{parsed.get_key_element()}={first}")
        else:
            out.append(text)
    return out


@contextmanager
def _hydra_context(user_dir: str | None = None) -> Iterator[None]:
    """Hydra set up as ``recframe train`` sets it up: recframe's configs (``pkg://recframe.configs``) behind the
    user's ``--config-dir`` if given (a ``hydra.searchpath`` override is read by Hydra's composition itself).
    A Hydra already set up (``hydra.main``'s) is set aside meanwhile."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    register_schemas()
    backup = get_gh_backup()
    GlobalHydra.instance().clear()  # inside hydra.main too (a composition that failed): its Hydra comes back after
    version.setbase("1.3")
    search_path = create_automatic_config_search_path(None, None, CONFIG_SEARCH_PATH)
    if user_dir is not None:  # where hydra.main puts --config-dir: before every other source
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(user_dir)}",
                            anchor=SearchPathQuery(provider="schema"))
    Hydra.create_main_hydra2("recframe", search_path)
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with overrides (outside a Hydra run: for tools and tests)."""
    from hydra import compose

    with _hydra_context():
        return compose(config_name, overrides=overrides)


def _group_options(group: str) -> list[str]:
    """The options of a config group in every folder of the search path (recframe's and the user's)."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _key_suggestion(key: str, base: DictConfig | None) -> str:
    """``did you mean 'trainer.max_steps'?`` for a misspelled dotted key, using the keys that exist."""
    if base is None:
        return ""
    parent, _, leaf = key.lstrip("+~").rpartition(".")
    node = OmegaConf.select(base, parent) if parent else base
    if not isinstance(node, DictConfig):
        return ""
    close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
    return f"did you mean {(parent + '.' if parent else '') + close[0]!r}?" if close else ""


def _describe(override: str, error: Exception, base: DictConfig | None) -> Problem:
    """Turn a Hydra/OmegaConf composition error into a Problem with a suggestion."""
    from hydra.errors import MissingConfigException

    key, _, value = override.partition("=")
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, MissingConfigException):
        group = key.lstrip("+~").split("@")[0].lstrip("/")
        options = [o for o in _group_options(group) if not o.endswith("_schema")]
        if options:
            return Problem(key, f"unknown option {value!r}; choose one of {options}", _suggest(value, options))
        return Problem(key, f"unknown config group {group!r}", _suggest(group, [p.name for p in CONFIG_DIR.iterdir()
                                                                                   if p.is_dir()]))
    if text.startswith("Could not override"):
        free = base is not None and _added_key(key.lstrip("+~"), base) is None  # its parent is free-form
        return Problem(key, "no such key", _key_suggestion(key, base) or (f"to add a new key use +{key}={value}"
                                                                             if free else ""))
    cause = error.__cause__ or error.__context__
    detail = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else text
    return Problem(key, detail, _choice_suggestion(detail))


def _schema_fields(node: object) -> set[str] | None:
    """The keys a config node may have (its dataclass schema's fields), or None for a free-form mapping or list."""
    if not isinstance(node, DictConfig):
        return None
    schema = OmegaConf.get_type(node)
    return {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None


def _added_key(key: str, cfg: DictConfig) -> str | None:
    """None if a schema on the path of ``key`` (dotted) declares it or a free-form mapping holds it, else the
    fix: the closest key the schema declares (``did you mean ...``), or what may be added.

    Args:
        key: the override's key.
        cfg: the composed config.
    """
    node: object = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = _schema_fields(node)
        if fields is None:  # a free-form mapping (a dict of the schema) or a list: anything may be added
            return None
        if part not in fields:
            close = difflib.get_close_matches(part, sorted(fields), n=1, cutoff=0.6)
            if close:
                return f"did you mean {'.'.join([*parts[:i], close[0]])!r}?"
            return ("a key must be in its schema (recframe/config/, or the model's module); + adds keys only in "
                    "tables.specs, sharding.constraints, sharding.tables and data.columns")
        node = node._get_node(part)  # type: ignore[attr-defined]
    return None


def added_key_problems(overrides: list[str], cfg: DictConfig) -> list[Problem]:
    """A ``+key=value``/``++key=value`` that adds a key no schema declares (a group selection is not a key).

    Args:
        overrides: the command line's overrides.
        cfg: the config they composed.

    Example:
        >>> cfg = compose_config(["+experiment=dlrm"])
        >>> [p.key for p in added_key_problems(["+experiment=dlrm", "+trainer.max_step=5",
        ...                                     "+sharding.constraints.t_cat_0.ranks=[0]"], cfg)]
        ['+trainer.max_step']
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for parsed in OverridesParser.create().parse_overrides(overrides):
        key = str(parsed.key_or_group)
        group = parsed.package is not None or "/" in key or bool(_group_options(key)) or key == "hydra" \
            or key.startswith("hydra.")
        fix = _added_key(key, cfg) if (parsed.is_add() or parsed.is_force_add()) and not group else None
        if fix is not None:
            sign = "++" if parsed.is_force_add() else "+"
            out.append(Problem(f"{sign}{key}", f"no such key: {sign} adds keys only inside free-form mappings", fix))
    return out


def _choice_suggestion(detail: str) -> str:
    """``did you mean 'row_wise'?`` for OmegaConf's ``Invalid value 'rowwise', expected one of [...]`` (Enum fields)."""
    found = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]$", detail)
    return _suggest(found.group(1), found.group(2).split(", ")) if found else ""


def _try_compose(overrides: list[str], config_name: str) -> tuple[DictConfig | None, Exception | None]:
    from hydra import compose

    try:
        return compose(config_name, overrides=overrides), None
    except Exception as error:  # Hydra raises several unrelated types; each is reported, none swallowed
        return None, error


def command_line_problems(args: list[str]) -> list[Problem]:
    """The problems of a command line that show without composing: an override that does not parse, a
    ``--config-dir`` that does not exist (Hydra would stop there, before composing).

    Args:
        args: the command line after the subcommand (overrides and Hydra flags).

    Example:
        >>> [p.message for p in command_line_problems(["+experiment=dlrm", "--config-dir", "/nowhere"])]
        ['no such folder: /nowhere']
        >>> command_line_problems(["+experiment=dlrm", "trainer.max_steps=5,10", "-m"])
        []
    """
    overrides, help_only = split_command_line(args)
    if help_only:
        return []
    try:
        _first_of_sweeps(overrides)
    except Exception as error:  # a syntax error in an override
        return [Problem(" ".join(overrides), str(error).strip().splitlines()[0])]
    user_dir = config_dir(args)
    if user_dir is not None and not os.path.isdir(user_dir):
        return [Problem("--config-dir", f"no such folder: {os.path.abspath(user_dir)}")]
    return []


def find_problems(args: list[str], owner_checks: Sequence[Check] = (), config_name: str = "train",
                  prepare: Callable[[DictConfig], None] | None = None, fails: bool = False) -> list[Problem]:
    """Every problem of a command line's config: composition errors, then semantic checks.

    Args:
        args: the command line after the subcommand (overrides and Hydra flags).
        owner_checks: checks of the config's other owners (data files, the planner), run after
            config's own; ``recframe.training.checks.find_problems`` passes them all.
        config_name: the root config.
        prepare: called with the composed config before the checks (which resolve interpolations that may
            read files): the application applies ``storage.options`` there.
        fails: the overrides are known not to compose (Hydra's composition of them failed): look for each bad
            one without composing them all first.
    """
    overrides, help_only = split_command_line(args)
    early = command_line_problems(args)
    if help_only or early:
        return early
    overrides = _first_of_sweeps(overrides)
    with _hydra_context(config_dir(args)):
        cfg, error = (None, None) if fails else _try_compose(overrides, config_name)
        if cfg is not None:
            if prepare is not None:
                prepare(cfg)
            return added_key_problems(overrides, cfg) + validate(cfg, owner_checks)
        # Find each bad override: the search path first (it changes which options exist), then group selections
        # (they change which keys exist).
        ordered = sorted(overrides, key=lambda o: (o.partition("=")[0].lstrip("+~") != "hydra.searchpath",
                                                   "." in o.partition("=")[0]))
        kept: list[str] = []
        problems: list[Problem] = []
        base: DictConfig | None = None  # the composition of kept, once made (each is made once)
        for override in ordered:
            cfg, error = _try_compose([*kept, override], config_name)
            if cfg is not None:
                kept.append(override)
                base = cfg
            else:
                if base is None:
                    base, _ = _try_compose(kept, config_name)
                problems.append(_describe(override, error, base))
        if base is None:
            base, error = _try_compose(kept, config_name)
        if base is None:
            problems.append(Problem(config_name, str(error).strip().splitlines()[0]))
        else:
            if prepare is not None:
                prepare(base)
            problems.extend(added_key_problems(kept, base) + validate(base, owner_checks))
        return problems

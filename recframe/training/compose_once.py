"""Hydra composes each job's config once, and recframe checks it there (issue 18).

``hydra.main`` of Hydra 1.3 composes a run's config twice: ``Hydra.get_mode`` composes it to read ``hydra.mode``
(a config may turn a run into a sweep), then ``Hydra.run`` composes it again to run it; a ``-m`` sweep composes
each job twice (the sweeper checks the batch, then the launcher composes it to run it). On a 2-core machine a
composition costs a good part of a second. While :func:`composing_once` is entered (around ``hydra.main``):

- a composition asked for again (same config, overrides and mode) is a copy of the first, as composed;
- ``Hydra.get_mode`` composes in the mode the run will ask for (``RUN``, or ``MULTIRUN`` for a command line
  with ``-m`` or a sweep), so that the run finds it composed; where that fails it is Hydra's own again;
- a job's config (``RUN`` mode) is checked when a run or a launcher first asks for it, before its run
  directory exists: ``check(config without its hydra node, overrides)``;
- a composition that fails is diagnosed: ``diagnose(overrides)`` (recframe's problem finder, which composes
  again, override by override: the failure path only).

Only ``hydra.main``'s loader (the first that composes) is served so; another one (the finder's, a job's own
``compose_config``) composes as Hydra does.

Problems end the command: they are printed as one message (``recframe.config.problems.format_problems``) and
:class:`ConfigRefused` (exit code 2) is raised, which Hydra does not catch. It wraps two methods of Hydra's
(``ConfigLoaderImpl.load_configuration``, ``Hydra.get_mode``; hydra-core 1.3 is pinned) and puts them back on
leaving; ``tests/unit/training/test_compose_once.py`` counts the compositions.

Example:
    >>> def check(cfg, overrides):
    ...     return [] if cfg.trainer.max_steps > 0 else [Problem("trainer.max_steps", "must be > 0")]
    >>> with composing_once(check, diagnose=lambda overrides: [], command="recframe plan"):
    ...     pass  # hydra.main(...)(job)(): each job's config composed once and checked
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, open_dict, read_write

from recframe.config.problems import Problem, format_problems
from recframe.errors import reported

JobCheck = Callable[[DictConfig, list[str]], list[Problem]]  # a job's config (no hydra node), its overrides
Diagnose = Callable[[list[str]], list[Problem]]  # the overrides of a composition that failed: every problem


_MODES = ("hydra.mode=RUN", "hydra.mode=MULTIRUN")  # what Hydra appends to the overrides after get_mode


class ConfigRefused(SystemExit):
    """The config's problems were printed: the command ends with exit code 2 and nothing is built."""


def job_config(cfg: DictConfig) -> DictConfig:
    """A copy of a composed config without its ``hydra`` node: the config Hydra hands to the job.

    Args:
        cfg: a config as Hydra composed it (with ``hydra``).
    """
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _with_mode(cfg: DictConfig | Exception | None, last: list[str]) -> DictConfig | Exception | None:
    """The composition with ``hydra.mode=RUN`` (or ``MULTIRUN``) appended, from the one without it, where the
    config leaves ``hydra.mode`` unset: Hydra appends it after ``get_mode`` (``_run_app``); it sets
    ``hydra.mode`` and is listed last among the hydra overrides, and does nothing else (its error, where the one
    without it failed). None otherwise: it is to be composed.

    Args:
        cfg: the composition without the last override (or its error, or None: not composed).
        last: the last override, or nothing.
    """
    from hydra.types import RunMode

    if cfg is None or not last or last[0] not in _MODES:
        return None
    if isinstance(cfg, Exception):
        return cfg
    if cfg.hydra.mode is not None:
        return None
    derived = copy.deepcopy(cfg)
    derived.hydra.mode = RunMode[last[0].partition("=")[2]]
    derived.hydra.overrides.hydra.append(last[0])
    return derived


@dataclass
class _Compositions:
    """The compositions of one ``hydra.main`` call: each kept (or its error), and the jobs checked."""

    load: Callable[..., DictConfig]  # Hydra's ConfigLoaderImpl.load_configuration
    check: JobCheck
    diagnose: Diagnose
    command: str
    multirun: bool  # the command line has -m
    loader: Any = None  # hydra.main's ConfigLoaderImpl: the first that composes
    kept: dict[tuple, DictConfig | Exception | None] = field(default_factory=dict)
    checked: set[tuple] = field(default_factory=set)
    quiet: bool = False  # composing for get_mode: a failure is no one's problem yet, and no job runs it

    def refuse(self, problems: list[Problem]) -> None:
        print(format_problems(problems, self.command), file=sys.stderr)
        raise ConfigRefused(2)

    def compose(self, loader: Any, config_name: str | None, overrides: list[str], run_mode: Any,
                from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        """``ConfigLoaderImpl.load_configuration``, once per (config, overrides, mode); checked, diagnosed."""
        from hydra.types import RunMode

        self.loader = loader if self.loader is None else self.loader
        if loader is not self.loader or not validate_sweep_overrides:  # another's; Hydra's own get_mode
            return self.load(loader, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        key = (config_name, tuple(overrides), run_mode)
        if key not in self.kept:
            self.kept[key] = _with_mode(self.kept.get((config_name, tuple(overrides[:-1]), run_mode)),
                                        overrides[-1:])
        if self.kept[key] is None:
            try:
                self.kept[key] = self.load(loader, config_name, overrides, run_mode, from_shell, True)
            except Exception as error:  # Hydra raises several unrelated types: each is diagnosed or raised again
                self.kept[key] = error
        found = self.kept[key]
        if isinstance(found, Exception):
            if not self.quiet:
                problems = self.diagnose([o for o in overrides if o not in _MODES])  # not Hydra's own
                if problems:
                    self.refuse(problems)
            raise found
        if run_mode == RunMode.RUN and not self.quiet and key not in self.checked:
            with reported(self.command):
                problems = self.check(job_config(found), list(overrides))
            if problems:
                self.refuse(problems)
            self.checked.add(key)
        return copy.deepcopy(found)

    def mode(self, get_mode: Callable[..., Any], hydra: Any, config_name: str | None, overrides: list[str]) -> Any:
        """``Hydra.get_mode``: composed as the run will ask for it (kept for it); Hydra's own where that fails."""
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode

        self.quiet = True
        try:
            parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(overrides)
            multirun = self.multirun or any(p.is_sweep_override() for p in parsed)
            cfg = hydra.config_loader.load_configuration(config_name=config_name, overrides=overrides,
                                                         run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
            return cfg.hydra.mode
        except Exception:  # as Hydra's get_mode: the run composes again and reports it
            return get_mode(hydra, config_name, overrides)
        finally:
            self.quiet = False


@contextmanager
def composing_once(check: JobCheck, diagnose: Diagnose, command: str, multirun: bool = False) -> Iterator[None]:
    """Inside, Hydra composes each job's config once, checks it with ``check`` and diagnoses a failure.

    Args:
        check: every problem of a job's config (``recframe.training.checks.job_problems``).
        diagnose: every problem of overrides that do not compose (``recframe.training.checks.find_problems``).
        command: the command named in the message (``recframe train``).
        multirun: the command line has ``-m`` (``--multirun``).
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra

    load, get_mode = ConfigLoaderImpl.load_configuration, Hydra.get_mode
    state = _Compositions(load, check, diagnose, command, multirun)

    def load_configuration(loader: Any, config_name: str | None, overrides: list[str], run_mode: Any,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        return state.compose(loader, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)

    def mode(hydra: Any, config_name: str | None, overrides: list[str]) -> Any:
        return state.mode(get_mode, hydra, config_name, overrides)

    ConfigLoaderImpl.load_configuration, Hydra.get_mode = load_configuration, mode  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConfigLoaderImpl.load_configuration, Hydra.get_mode = load, get_mode  # type: ignore[method-assign]

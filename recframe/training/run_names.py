"""Sweep folders named by what they sweep: ``0_lr=0.01`` (configs/train.yaml's ``hydra.sweep.subdir``).

- ``short_run_name`` (the ``recframe_run_name`` resolver): a folder name from Hydra's
  ``override_dirname``, each key shortened to its last part.
- ``sweep_folder_overrides``: for a multirun, leaves the keys every job shares out of
  ``override_dirname``.

Imported before Hydra starts (``recframe.training.app``), so it imports nothing heavy.

Example:
    >>> short_run_name("optim.sparse.lr=0.05,tables.embedding_dim=16")
    'lr=0.05,embedding_dim=16'
"""

from __future__ import annotations

from omegaconf import OmegaConf

NAME_LIMIT = 120  # characters of a sweep job's folder name


def short_run_name(override_dirname: str) -> str:
    """A folder name from Hydra's ``override_dirname``: keys shortened to their last part, ``/`` made ``_``."""
    items = []
    for item in override_dirname.split(","):
        key, _, value = item.partition("=")
        items.append(f"{key.lstrip('+~').rsplit('.', 1)[-1]}={value}" if value else key)
    name = ",".join(items).replace("/", "_").replace(" ", "")
    return name[:NAME_LIMIT] or "default"


def sweep_folder_overrides(args: list[str]) -> list[str]:
    """For a multirun (``-m``), the override that leaves the keys every job shares out of ``override_dirname``, so a
    job's folder is named by what it sweeps (``0_lr=0.01``); nothing otherwise, or when the user sets it.

    Example:
        >>> sweep_folder_overrides(["-m", "+experiment=dlrm", "optim.sparse.lr=0.01,0.05"])
        ["hydra.job.config.override_dirname.exclude_keys=['experiment']"]
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from recframe.config.compose import split_command_line

    overrides = split_command_line(args)[0]
    if not {"-m", "--multirun"} & set(args) or any("override_dirname" in o for o in overrides):
        return []
    parsed = OverridesParser.create().parse_overrides(overrides)
    shared = [p.key_or_group for p in parsed if not p.is_sweep_override() and not p.is_hydra_override()]
    return [f"hydra.job.config.override_dirname.exclude_keys=[{','.join(repr(k) for k in shared)}]"] if shared else []


def register_run_name_resolver() -> None:
    """``${recframe_run_name:${hydra.job.override_dirname}}`` in configs/train.yaml's sweep subdir."""
    if not OmegaConf.has_resolver("recframe_run_name"):
        OmegaConf.register_new_resolver("recframe_run_name", short_run_name)

"""The Hydra entry point of ``recframe train|eval|plan|bench``: compose once, check, run the job.

Hydra composes the config (once per job: ``recframe.training.compose_once``), recframe checks each job's
config as it is composed (every problem at once, exit code 2, before the run directory exists and before
anything is built), then Hydra makes the run directory and calls the job. Where Hydra's composition fails,
recframe's problem finder lists every bad override (it composes again, on that path only). Hydra's own
printing flags (``--cfg``, ``--info``, ``--help``, shell completion) run no job and check nothing.

Example:
    $ recframe train +experiment=dlrm trainer.max_steps=-5
    recframe train: the config has 1 problem; nothing was built:
      trainer.max_steps: synthetic data is an endless stream: set trainer.max_steps > 0
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from omegaconf import DictConfig

from recframe.config.compose import command_line_problems, config_dir, split_command_line
from recframe.config.problems import format_problems
from recframe.config.store import CONFIG_SEARCH_PATH, register_schemas
from recframe.data.resolvers import register_resolvers
from recframe.errors import DEBUG_ENV, debug_enabled, reported
from recframe.training.checks import apply_storage_options, find_problems, job_problems
from recframe.training.compose_once import ConfigRefused, composing_once
from recframe.training.output import configure_output

HYDRA_PRINTS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc")


def only_prints(args: list[str]) -> bool:
    """Whether Hydra only prints something and runs no job: ``--cfg job|hydra|all``, ``--info``, ``--help``,
    ``--hydra-help``, shell completion (``-sc install=bash``, the queries of the completion script).

    Args:
        args: the command line after the subcommand.

    Example:
        >>> only_prints(["+experiment=tabular", "--cfg", "job"]), only_prints(["+experiment=dlrm"])
        (True, False)
        >>> only_prints(["-sc", "install=bash"]), only_prints(["+experiment=dlrm", "--hydra-help"])
        (True, True)
    """
    return any(a in HYDRA_PRINTS or a.startswith(("--cfg=", "--info=", "--shell-completion=")) for a in args)


def run_hydra(args: list[str], job: Callable[[DictConfig], Any], command: str) -> int:
    """Run ``job`` on each config Hydra composes from ``args``; returns the exit code (2: the config's problems).

    Args:
        args: the command line after the subcommand (overrides and Hydra's flags).
        job: the task function (``recframe.training.app.train_job``).
        command: the command named in messages (``recframe train``).
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and not any(a.startswith("hydra.run.dir=") for a in args):
        # Under torchrun every rank runs this: they must agree on the run directory.
        args = [*args, f"hydra.run.dir=outputs/torchrun/{run_id}"]
    register_resolvers()  # for --resolve, and the checks' data-file resolvers
    if only_prints(args):  # Hydra prints (help, --cfg, --info, shell completion): nothing is built, read or checked
        if "--hydra-help" in args:  # Hydra composes its help without the primary config: only hydra overrides apply
            app_overrides = [o for o in split_command_line(args)[0] if not o.lstrip("+~").startswith("hydra")]
            args = [a for a in args if a not in app_overrides]
    else:
        early = command_line_problems(args)  # what Hydra would stop at before composing
        if early:
            print(format_problems(early, command), file=sys.stderr)
            return 2
    import hydra

    from recframe.training.run_names import register_run_name_resolver, sweep_folder_overrides

    register_schemas()
    register_run_name_resolver()  # sweep folders named by their overrides (configs/train.yaml)
    args = [*args, *sweep_folder_overrides(args)]  # ... by the swept ones only
    if debug_enabled(args):
        os.environ[DEBUG_ENV] = "1"  # hydra.verbose=true: the ranks Lightning starts show tracebacks too

    def reporting_job(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        with reported(command):  # a RecframeError anywhere in the job (inside trainer.fit too): one message
            configure_output(cfg, verbose=HydraConfig.get().verbose is True)  # other libraries' INFO lines: log_level
            apply_storage_options(cfg)  # fsspec options for every URL the job opens
            return job(cfg)

    user_dir = config_dir(args)
    flags = [] if user_dir is None else ["--config-dir", user_dir]  # the overrides' problems, in the same folders
    checked = nullcontext() if only_prints(args) else composing_once(
        job_problems, lambda overrides: find_problems([*flags, *overrides], fails=True), command,
        multirun=bool({"-m", "--multirun"} & set(args)))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *args]
    try:
        with checked:
            hydra.main(config_path=CONFIG_SEARCH_PATH, config_name="train", version_base="1.3")(reporting_job)()
    except ConfigRefused as refused:
        return int(refused.code or 2)
    finally:
        sys.argv = saved_argv
    return 0

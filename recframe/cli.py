"""The ``recframe`` command: ``recframe train|eval|export|predict|retrieve|plan|preprocess|bench [args]``.

No subcommand means ``train``. The arguments after the subcommand go to that command (Hydra
overrides for train/eval/plan/bench). Only the chosen command's module is imported, so
``recframe --help`` starts fast.

An error the user can fix (``recframe.errors.RecframeError``: data, config, checkpoint, plan), raised
anywhere in the command (inside training too), ends it with one message and exit code 2, no
traceback; ``--debug`` (anywhere on the command line) or ``hydra.verbose=true`` shows the traceback.

Example:
    $ recframe --help
    $ recframe train +experiment=dlrm trainer.max_steps=100
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from recframe.errors import DEBUG_ENV, reported
from recframe.openmp_wait import set_default_spin


@dataclass(frozen=True)
class Command:
    """A subcommand.

    Args:
        summary: one line for ``--help``.
        entry: ``"module:function"`` taking the remaining argv and returning an exit code.
    """

    summary: str
    entry: str
    hydra: bool = True  # takes Hydra overrides (storage.options come from the config); else key=value or flags


COMMANDS: dict[str, Command] = {
    "train": Command("train a model from a Hydra config (default): recframe train +experiment=dlrm",
                     "recframe.training.app:train_command"),
    "eval": Command("evaluate a checkpoint on any world size and write metrics.json: recframe eval +experiment=... "
                    "ckpt_path=...", "recframe.training.evaluate:eval_command"),
    "export": Command("write one unsharded model file (eager), or a serving program torch runs without recframe: "
                      "recframe export ckpt=<run>/checkpoints/step-N out=model.pt [format=eager|exported|aoti] "
                      "[quantize=none|fp16|int8|int4]", "recframe.training.export:export_command", hydra=False),
    "predict": Command("score a data file (or the run's validation rows) with an exported model: recframe predict "
                       "model=model.pt2 input=FILE out=scores.csv", "recframe.training.predict:predict_command",
                       hydra=False),
    "retrieve": Command("top-k items of a two-tower run's validation users from its retrieval export: recframe "
                        "retrieve model=<folder> k=10 out=top10.csv", "recframe.training.retrieve:retrieve_command",
                        hydra=False),
    "plan": Command("print the sharding plan and memory per rank, no training: recframe plan +experiment=... "
                    "world_size=N", "recframe.training.app:plan_command"),
    "preprocess": Command("convert raw data to recframe's binary layout: recframe preprocess criteo --input FILE... "
                          "--output DIR; MLPerf's multi-hot layout: recframe preprocess multihot --input DIR "
                          "--output DIR2", "recframe.data.preprocess:preprocess_command", hydra=False),
    "bench": Command("time the real training path and print one JSON line of samples/s",
                     "recframe.training.app:bench_command"),
}

# Lightning relaunches the other ranks from sys.argv, which Hydra needs without the subcommand:
# the subcommand travels to them in this environment variable.
COMMAND_ENV = "RECFRAME_COMMAND"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: recframe [COMMAND] [ARGS...]",
        "",
        "recframe trains recommendation models (sharded embedding tables + dense towers) from Hydra configs.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        "No command means train. `recframe COMMAND --help` shows a command's own options; --debug shows the",
        "traceback of an error.",
    ]
    return "\n".join(lines)


def completion_line(line: str) -> str:
    """The line that bash completion hands over (``COMP_LINE``), without the subcommand.

    Hydra's completion script (``recframe -sc install=bash``) asks ``recframe -sc query=bash`` for the
    words of the line typed so far; Hydra completes the words after the program's name, so the
    subcommand, a word Hydra does not know, is taken out (all subcommands compose the same configs).

    Example:
        >>> completion_line("recframe train +experiment=dl"), completion_line("recframe +experiment=dl")
        ('recframe +experiment=dl', 'recframe +experiment=dl')
    """
    words = line.split(" ")
    if len(words) > 2 and words[1] in COMMANDS:
        return " ".join([words[0], *words[2:]])
    return line


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args and args[0] in ("-V", "--version"):
        from recframe import __version__

        print(f"recframe {__version__}")
        return 0
    if "COMP_LINE" in os.environ and any(a.startswith("query=") for a in args):  # a shell completion query
        os.environ["COMP_LINE"] = completion_line(os.environ["COMP_LINE"])
    set_default_spin()  # before torch loads libgomp (recframe.openmp_wait)
    name = args.pop(0) if args and args[0] in COMMANDS else os.environ.get(COMMAND_ENV, "train")
    os.environ[COMMAND_ENV] = name
    if "--debug" in args:  # through the environment, so that the ranks Lightning starts see it too
        args = [a for a in args if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    if not COMMANDS[name].hydra:  # storage.options.PROTOCOL.KEY=VALUE: fsspec options of every URL it opens
        from recframe.storage_options import apply_options, split_option_arguments

        options, args, problems = split_option_arguments(args)
        if problems:
            print(f"recframe {name}: " + "; ".join(problems), file=sys.stderr)
            return 2
        apply_options(options)
    module, function = COMMANDS[name].entry.split(":")
    with reported(f"recframe {name}"):
        return int(getattr(importlib.import_module(module), function)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

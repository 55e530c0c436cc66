"""What is wrong with a config: ``Problem`` (a key path, what is wrong, how to fix it) and the message listing them.

Every check of a run config returns Problems, whoever owns it (config's own checks, the data
source's, the planner's); ``recframe train`` prints them all at once and builds nothing.

Example:
    >>> problems = [Problem("trainer.max_step", "no such key", "did you mean 'trainer.max_steps'?")]
    >>> print(format_problems(problems))
    recframe train: the config has 1 problem; nothing was built:
      trainer.max_step: no such key (did you mean 'trainer.max_steps'?)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config.

    Args:
        key: the key path (or the override) it concerns.
        message: what is wrong.
        hint: how to fix it, or empty.
    """

    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"  {self.key}: {self.message}" + (f" ({self.hint})" if self.hint else "")


Check = Callable[[DictConfig], list[Problem]]  # a check of a composed run config: every problem it finds


def format_problems(problems: list[Problem], command: str = "recframe train") -> str:
    """The message shown for a bad config: a header and one line per problem.

    Args:
        problems: what the checks found (not empty).
        command: the command named in the header.
    """
    noun = "problem" if len(problems) == 1 else "problems"
    return "\n".join([f"{command}: the config has {len(problems)} {noun}; nothing was built:", *map(str, problems)])

"""Learning-rate schedule of the dense optimizer: linear warmup, then optional decay.

The factor multiplies the peak lr; it is a pure function of the optimizer step, so a resumed run
continues on the same curve.

Example:
    >>> from recframe.config.schema import ScheduleConfig
    >>> cfg = ScheduleConfig(warmup_steps=10, decay="linear", decay_start_step=10, decay_steps=10)
    >>> [round(lr_factor(s, cfg), 2) for s in (0, 5, 10, 15, 20, 30)]
    [0.1, 0.6, 1.0, 0.5, 0.0, 0.0]
"""

from __future__ import annotations

import math

import torch

from recframe.config.schema import ScheduleConfig
from recframe.vocab import LrDecay


def lr_factor(step: int, cfg: ScheduleConfig) -> float:
    """The lr multiplier at optimizer step ``step`` (0-based: the factor used by step ``step``'s update).

    Args:
        step: optimizer steps taken so far.
        cfg: the schedule.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == LrDecay.none or cfg.decay_steps <= 0 or step < cfg.decay_start_step:
        return 1.0
    progress = min(1.0, (step - cfg.decay_start_step) / cfg.decay_steps)
    low = cfg.min_lr_ratio
    if cfg.decay == LrDecay.linear:
        shape = 1.0 - progress
    elif cfg.decay == LrDecay.cosine:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif cfg.decay == LrDecay.polynomial:
        shape = (1.0 - progress) ** cfg.power
    else:
        raise ValueError(f"optim.schedule.{LrDecay.problem('decay', cfg.decay)}")
    return low + (1.0 - low) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying ``lr_factor`` every optimizer step.

    Args:
        optimizer: the dense optimizer.
        cfg: the schedule.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))

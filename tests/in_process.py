"""Train a composed config in the test's own process (no CLI, no subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from recframe.training.app import train_job
from recframe.training.checks import check_config, compose_config


def train_in_process(overrides: list[str], run_dir: Path) -> dict:
    """Compose ``overrides`` (with ``run_dir``), check the config, train it on one thread; its ``metrics.json``.

    Args:
        overrides: the command line's overrides (an experiment, data paths, ...).
        run_dir: the run directory (``metrics.json`` is read from it).

    Example:
        >>> metrics = train_in_process(["+experiment=tabular", ...], tmp_path / "run")  # doctest: +SKIP
    """
    cfg = compose_config([*overrides, f"run_dir={run_dir}"])
    assert check_config(cfg) == []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_job(cfg)
    finally:
        torch.set_num_threads(threads)
    return json.loads((Path(run_dir) / "metrics.json").read_text())

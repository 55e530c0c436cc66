"""``recframe export``: one unsharded file of a trained model, loadable in one process without the training world.

The file (``torch.save``, read back with ``weights_only=True``) holds only tensors and plain
values: ``format``, ``config`` (the run's composed config as YAML: model, features, tables),
``features`` (dense and sparse feature names), ``tables`` (name, rows, dim, features, pooling of
each table) and ``state_dict`` (the model's weights, every table whole; no optimizer state).
:func:`load_exported` rebuilds the model through recframe's own builder, which picks the class by
``model.name`` among recframe's models: the file names no class or function to import.

Example:
    $ recframe export ckpt=outputs/run1/checkpoints/step-300 out=dlrm.pt

    >>> model, cfg = load_exported("dlrm.pt")  # doctest: +SKIP
    >>> logits = model(batch)  # a recframe.sparse.Batch with cfg.features' dense and sparse features  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from recframe.errors import RecframeError

FORMAT = "recframe-export/1"
USAGE = "usage: recframe export ckpt=<run>/checkpoints/step-N out=<file.pt>"


class ExportWriteError(RecframeError, RuntimeError):
    """The export file could not be written (full disk, no permission, a file where a folder should be)."""


def _model_from_config(config_text: str, backend: str) -> tuple[nn.Module, DictConfig]:
    from recframe.training.builders import build_model

    cfg = OmegaConf.create(config_text)
    cfg.tables.backend = backend
    return build_model(cfg), cfg


def export_checkpoint(folder: Path, out: Path) -> dict[str, Any]:
    """Write the unsharded export of checkpoint ``folder`` to ``out``; returns what was written.

    Args:
        folder: a ``checkpoints/step-N`` folder of any world size.
        out: the file to write (atomically).

    Raises:
        ValueError: the checkpoint is incomplete, or does not fit the model its config describes.
        ExportWriteError: ``out`` cannot be written (the message names it; nothing is left half-written).
    """
    from recframe.config.resolve import table_configs
    from recframe.training.checkpoint.reader import load
    from recframe.training.files import write_atomic

    checkpoint, saved = load(folder, layout=None)
    if not saved.get("config"):
        raise ValueError(f"{folder} holds no run config: it cannot be exported")
    model, cfg = _model_from_config(saved["config"], backend="torch")
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)  # strict: every weight of the model is in the checkpoint, and nothing else
    export = {
        "format": FORMAT,
        "config": saved["config"],
        "global_step": int(checkpoint["global_step"]),
        "features": {"dense": list(cfg.features.dense), "sparse": list(cfg.features.sparse)},
        "tables": [{k: v for k, v in dataclasses.asdict(t).items()
                    if k in ("name", "num_embeddings", "embedding_dim", "feature_names", "pooling")}
                   for t in table_configs(cfg)],
        "state_dict": {k: v.contiguous() for k, v in state.items()},
    }
    try:
        write_atomic(out, lambda f: torch.save(export, f))
    except OSError as error:
        raise ExportWriteError(f"cannot write {out}: {type(error).__name__}: {error}") from error
    return export


def load_exported(path: str | Path, backend: str = "auto") -> tuple[nn.Module, DictConfig]:
    """The model of an export file (eval mode) and its run config.

    Args:
        path: a file written by ``recframe export``.
        backend: embedding kernel backend for the rebuilt tables (``auto``, ``torch``, ``fbgemm``, ``triton``).

    Example:
        >>> model, cfg = load_exported("dlrm.pt")  # doctest: +SKIP
        >>> list(cfg.features.sparse)[:2]  # doctest: +SKIP
        ['cat_0', 'cat_1']
    """
    from recframe.training.checkpoint.safety import safe_torch_load

    export = safe_torch_load(path)
    if not isinstance(export, dict) or export.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (write one with `recframe export`)")
    model, cfg = _model_from_config(export["config"], backend)
    model.load_state_dict(export["state_dict"])
    return model.eval(), cfg


def export_command(args: list[str]) -> int:
    """``recframe export ckpt=FOLDER out=FILE``."""
    options = dict(a.split("=", 1) for a in args if "=" in a)
    problems = [f"{a!r} is not key=value" for a in args if "=" not in a]
    problems += [f"unknown option {k!r} (options: ckpt, out)" for k in options if k not in ("ckpt", "out")]
    problems += [f"{k}= is missing" for k in ("ckpt", "out") if k not in options]
    if problems:
        print("recframe export: " + "; ".join(problems) + f"\n{USAGE}", file=sys.stderr)
        return 2
    try:
        export = export_checkpoint(Path(options["ckpt"]), Path(options["out"]))
    except ExportWriteError as error:
        print(f"recframe export: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"recframe export: {options['ckpt']}: {error}", file=sys.stderr)
        return 2
    print(f"recframe export: wrote {options['out']} (step {export['global_step']}, {len(export['tables'])} tables, "
          f"{sum(v.numel() for v in export['state_dict'].values())} weights)")
    return 0

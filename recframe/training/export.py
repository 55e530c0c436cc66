"""``recframe export``: one unsharded file of a trained model, loadable in one process without the training world.

The file (``torch.save``, read back with ``weights_only=True``) holds only tensors and plain
values: ``format``, ``config`` (the run's composed config as YAML: model, features, tables),
``features`` (dense and sparse feature names), ``tables`` (name, rows, dim, features, pooling of
each table) and ``state_dict`` (the model's weights, every table whole; no optimizer state).
:func:`load_exported` rebuilds the model through recframe's own builder, which picks the class by
``model.name`` among recframe's models: the file names no class or function to import.

``format=exported`` and ``format=aoti`` write a serving program instead (``recframe.serving``): a
``torch.export`` program or an AOTInductor package of ``(dense, values, lengths) -> probabilities``
that torch runs without recframe, its tables as trained or quantized (``quantize=fp16|int8|int4``).

Example:
    $ recframe export ckpt=outputs/run1/checkpoints/step-300 out=dlrm.pt
    $ recframe export ckpt=outputs/run1/checkpoints/step-300 out=dlrm.pt2 format=aoti quantize=int8

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
from recframe.storage import Location
from recframe.vocab import ExportFormat, Quantize

FORMAT = "recframe-export/1"
USAGE = ("usage: recframe export ckpt=<run>/checkpoints/step-N out=<file.pt | file.pt2 | folder> "
         "[format=eager|exported|aoti|retrieval] [quantize=none|fp16|int8|int4]")
OPTIONS = ("ckpt", "out", "format", "quantize")


class ExportWriteError(RecframeError, RuntimeError):
    """The export file could not be written (full disk, no permission, a file where a folder should be)."""


def saved_run_config(saved: str | dict[str, Any]) -> DictConfig:
    """A run config kept in a checkpoint or an export; one saved before ``storage`` existed gets its defaults.

    Args:
        saved: the config as YAML text or a mapping.

    Example:
        >>> saved_run_config("seed: 1").storage.cache_dir is None
        True
    """
    from recframe.config.schema import StorageConfig

    cfg = OmegaConf.create(saved)
    if "storage" not in cfg:  # the data sources read storage.cache_dir
        cfg.storage = OmegaConf.structured(StorageConfig)
    return cfg


def _model_from_config(config_text: str, backend: str) -> tuple[nn.Module, DictConfig]:
    from recframe.training.builders import build_model

    cfg = saved_run_config(config_text)
    cfg.tables.backend = backend
    return build_model(cfg), cfg


def trained_model(folder: Location) -> tuple[nn.Module, DictConfig, dict[str, torch.Tensor], int, str]:
    """The unsharded model of checkpoint ``folder`` (torch backend): ``(model, cfg, state, global step, config)``.

    Raises:
        ValueError: the checkpoint is incomplete, or does not fit the model its config describes.
    """
    from recframe.training.checkpoint.reader import load

    checkpoint, saved = load(folder, layout=None)
    if not saved.get("config"):
        raise ValueError(f"{folder} holds no run config: it cannot be exported")
    model, cfg = _model_from_config(saved["config"], backend="torch")
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)  # strict: every weight of the model is in the checkpoint, and nothing else
    return model.eval(), cfg, state, int(checkpoint["global_step"]), saved["config"]


def export_checkpoint(folder: Location, out: Path) -> dict[str, Any]:
    """Write the unsharded export of checkpoint ``folder`` to ``out``; returns what was written.

    Args:
        folder: a ``checkpoints/step-N`` folder of any world size.
        out: the file to write (atomically).

    Raises:
        ValueError: the checkpoint is incomplete, or does not fit the model its config describes.
        ExportWriteError: ``out`` cannot be written (the message names it; nothing is left half-written).
    """
    from recframe.config.resolve import table_configs
    from recframe.training.files import write_atomic

    _, cfg, state, step, config = trained_model(folder)
    export = {
        "format": FORMAT,
        "config": config,
        "global_step": step,
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


def export_serving(folder: Location, out: Path, fmt: ExportFormat, quantize: Quantize) -> dict[str, Any]:
    """Write the serving program of checkpoint ``folder`` (``recframe.serving.package``); returns its metadata.

    Args:
        folder: a ``checkpoints/step-N`` folder of any world size.
        out: the ``.pt2`` file to write (atomically).
        fmt: ``exported`` or ``aoti``.
        quantize: how the tables are stored.
    """
    from recframe.serving.package import write_program
    from recframe.serving.program import ServingModel

    model, cfg, _, step, config = trained_model(folder)
    serving = ServingModel(model, list(cfg.features.sparse), quantize)
    meta = {"global_step": step, "dense_features": list(cfg.features.dense),
            "tasks": [t.name for t in getattr(model, "tasks", ())], "config": config}
    return write_program(serving, out, fmt, meta, num_dense=len(cfg.features.dense))


def export_retrieval(folder: Location, out: Path, quantize: Quantize) -> dict[str, Any]:
    """Write the retrieval export of a two-tower checkpoint into folder ``out`` (``recframe.serving.retrieval``):
    ``user_tower.pt2`` and ``items.pt`` (every catalog item's vector); returns the user program's metadata.

    Args:
        folder: a ``checkpoints/step-N`` folder of a two-tower run.
        out: the folder to write (created; its two files are each written atomically).
        quantize: how the user tables are stored.
    """
    from recframe.serving.package import write_program
    from recframe.serving.retrieval import UserTower, item_vectors, select_keys
    from recframe.training.builders import build_datamodule
    from recframe.training.files import write_atomic

    model, cfg, _, step, config = trained_model(folder)
    tower = UserTower(model, quantize)  # checks the model first
    source = build_datamodule(cfg).source
    if not hasattr(source, "item_catalog"):
        raise ValueError(f"data.kind={cfg.data.kind} has no item catalog to index (movielens_retrieval has one)")
    item_ids, catalog = source.item_catalog()
    vectors = item_vectors(model, catalog)
    rows = select_keys(catalog, ["item_id"]).values() if "item_id" in catalog.keys() else \
        torch.full((len(item_ids),), -1)
    items = {"item_ids": torch.as_tensor(item_ids, dtype=torch.int64), "vectors": vectors.contiguous(),
             "item_rows": rows.to(torch.int64)}
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(out / "items.pt", lambda f: torch.save(items, f))
    except OSError as error:
        raise ExportWriteError(f"cannot write {out / 'items.pt'}: {type(error).__name__}: {error}") from error
    meta = {"global_step": step, "dense_features": list(cfg.features.dense), "config": config,
            "items": len(item_ids), "dim": int(vectors.shape[1])}
    return write_program(tower, out / "user_tower.pt2", ExportFormat.exported, meta,
                         num_dense=int(getattr(model, "num_dense_features", 0)))


def load_exported(path: str | Path, backend: str = "auto") -> tuple[nn.Module, DictConfig]:
    """The model of an export file (eval mode) and its run config.

    Args:
        path: a file written by ``recframe export`` (a local path or an fsspec URL).
        backend: embedding kernel backend for the rebuilt tables (``auto``, ``torch``, ``fbgemm``, ``triton``).

    Example:
        >>> model, cfg = load_exported("dlrm.pt")  # doctest: +SKIP
        >>> list(cfg.features.sparse)[:2]  # doctest: +SKIP
        ['cat_0', 'cat_1']
    """
    from recframe import storage
    from recframe.training.checkpoint.safety import safe_torch_load

    with storage.staged_input(path) as local:  # a local path, or an fsspec URL downloaded to a temporary file
        export = safe_torch_load(local)
    if not isinstance(export, dict) or export.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (write one with `recframe export`)")
    model, cfg = _model_from_config(export["config"], backend)
    model.load_state_dict(export["state_dict"])
    return model.eval(), cfg


def export_command(args: list[str]) -> int:
    """``recframe export ckpt=FOLDER out=FILE [format=eager|exported|aoti] [quantize=none|fp16|int8|int4]``."""
    options = dict(a.split("=", 1) for a in args if "=" in a)
    problems = [f"{a!r} is not key=value" for a in args if "=" not in a]
    problems += [f"unknown option {k!r} (options: {', '.join(OPTIONS)})" for k in options if k not in OPTIONS]
    problems += [f"{k}= is missing" for k in ("ckpt", "out") if k not in options]
    fmt, quantize = options.get("format", ExportFormat.eager), options.get("quantize", Quantize.none)
    problems += [p for p in (ExportFormat.problem("format", fmt), Quantize.problem("quantize", quantize)) if p]
    if not problems and fmt == ExportFormat.eager and quantize != Quantize.none:
        problems.append(f"quantize={quantize} needs format=exported or format=aoti (the eager file holds the "
                        "trained weights)")
    if problems:
        print("recframe export: " + "; ".join(problems) + f"\n{USAGE}", file=sys.stderr)
        return 2
    from recframe import storage

    folder, out = storage.location(options["ckpt"]), options["out"]  # each a local path or an fsspec URL
    try:
        with storage.staged_output(out) as local:  # a URL: written locally, uploaded once complete
            if fmt == ExportFormat.eager:
                export = export_checkpoint(folder, local)
            elif fmt == ExportFormat.retrieval:
                meta = export_retrieval(folder, local, Quantize(quantize))
            else:
                meta = export_serving(folder, local, ExportFormat(fmt), Quantize(quantize))
                size = local.stat().st_size
    except RecframeError as error:
        print(f"recframe export: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"recframe export: {options['ckpt']}: {error}", file=sys.stderr)
        return 2
    if fmt == ExportFormat.eager:
        print(f"recframe export: wrote {out} (step {export['global_step']}, {len(export['tables'])} tables, "
              f"{sum(v.numel() for v in export['state_dict'].values())} weights)")
    elif fmt == ExportFormat.retrieval:
        print(f"recframe export: wrote {out}/user_tower.pt2 (the user tower, tables {quantize}: "
              f"{meta['table_bytes'] / 1e6:.1f} MB) and {out}/items.pt ({meta['items']} items x {meta['dim']}); "
              f"query them with recframe retrieve model={out}")
    else:
        print(f"recframe export: wrote {out} ({fmt}, step {meta['global_step']}, tables {quantize}: "
              f"{meta['table_bytes'] / 1e6:.1f} MB, file {size / 1e6:.1f} MB); run it with "
              + ("torch.export.load(path).module()" if fmt == ExportFormat.exported
                 else "torch._inductor.aoti_load_package(path)") + "(dense, values, lengths)")
    return 0

"""``recframe predict``: score a data file (or the run's validation rows) with an exported model, in batches.

    recframe predict model=dlrm.pt2 input=day_23.tsv out=scores.csv

``model`` is a serving program (``recframe export format=exported|aoti``) or an eager export
(``format=eager``, run through the same serving path). The data settings come from the run's
config inside the file (the kind, the spec, the id mapping; the training file, which defines a
vocabulary); ``data.KEY=VALUE`` arguments override them (``data.path=`` where the training file
moved). ``input=FILE`` scores that file as the run's test file (``data.test_path``: sources that
take one: ``tabular``, ``criteo_tsv``, ``criteo_binary``); without it the run's validation rows are
scored. Rows are read as in training: malformed rows are skipped and counted
(``data.on_error``), and ``row`` numbers the rows scored, in file order.

``out`` gets one line per row: ``row``, the label(s) and the score(s) (one ``score`` column, or
``score_<task>`` per task), as CSV, or Parquet for ``.parquet`` (needs pyarrow). A progress bar
runs on stderr; the summary line gives rows, samples/s and the AUC per task where the labels
have both classes.

Example:
    $ recframe predict model=dlrm.pt2 out=scores.csv batch_size=4096
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from recframe import storage
from recframe.errors import ConfigError, RecframeError

USAGE = ("usage: recframe predict model=<file.pt2 | file.pt> out=<scores.csv | scores.parquet> [input=FILE] "
         "[batch_size=N] [device=cpu|cuda] [data.KEY=VALUE ...]")
OPTIONS = ("model", "out", "input", "batch_size", "device")


def load_scorer(path: Path, device: torch.device) -> tuple[Callable[..., torch.Tensor], DictConfig, list[str]]:
    """``(dense, values, lengths) -> probabilities`` of an exported model, its run config and its task names."""
    from recframe.serving.package import program_format, read_program
    from recframe.serving.program import ServingModel
    from recframe.training.export import load_exported, saved_run_config

    try:
        program_format(path)
    except RecframeError:
        try:
            model, cfg = load_exported(path)  # an eager export
        except (ValueError, OSError) as error:
            raise ConfigError(f"model={path}: {error}") from error
        run = ServingModel(model, list(cfg.features.sparse)).to(device)
        return run, cfg, [t.name for t in getattr(model, "tasks", ())]
    run, meta = read_program(path)
    if device.type != "cpu" and hasattr(run, "to"):
        run = run.to(device)
    return run, saved_run_config(meta["config"]), list(meta.get("tasks", []))


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    """Set ``KEY=VALUE`` overrides (values parsed as YAML) on a run config; a key it lacks is a ConfigError."""
    for item in overrides:
        key, value = item.split("=", 1)
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            raise ConfigError(f"{key}: no such key in the model's run config (data keys: {sorted(cfg.data.keys())})")
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else value, merge=False)


def _config(cfg: DictConfig, options: dict[str, str], overrides: list[str]) -> DictConfig:
    """The run config with predict's options and ``data.*`` overrides applied."""
    apply_overrides(cfg, overrides)
    if "batch_size" in options:
        cfg.data.batch_size = int(options["batch_size"])
    if "input" in options:
        if "test_path" not in cfg.data:
            raise ConfigError(f"input=: data.kind={cfg.data.kind} takes no test file; score its validation rows "
                              "(leave input out) or preprocess the file into a source that takes one")
        cfg.data.test_path = options["input"]
    cfg.data.num_workers = 0
    cfg.trainer.pipeline = False
    return cfg


def predict(run: Callable[..., torch.Tensor], cfg: DictConfig, tasks: list[str], scored: str, device: torch.device,
            progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Score every batch of the ``scored`` split (``test`` or ``val``).

    Returns:
        The columns of the output, and the data source's report (rows read, malformed rows skipped per kind).
    """
    from tqdm import tqdm

    from recframe.training.builders import build_datamodule

    datamodule = build_datamodule(cfg)
    loader = datamodule.test_dataloader() if scored == "test" else datamodule.val_dataloader()
    keys = list(cfg.features.sparse)
    labels, scores = [], []
    with torch.no_grad(), tqdm(desc="predict", unit="rows", unit_scale=True, disable=not progress,
                               file=sys.stderr) as bar:
        for item in loader:
            batch = datamodule.materialize(item, device)
            kjt = batch.sparse_features
            if kjt.keys() != keys:
                kjt = kjt.permute([kjt.keys().index(k) for k in keys])
            out = run(batch.dense_features.float(), kjt.values().long(), kjt.lengths().long().view(len(keys), -1))
            scores.append(out.reshape(len(batch.labels), -1).float().cpu())
            labels.append(batch.labels.reshape(len(batch.labels), -1).float().cpu())
            bar.update(len(batch.labels))
    score = torch.cat(scores).numpy() if scores else np.zeros((0, max(len(tasks), 1)), np.float32)
    label = torch.cat(labels).numpy() if labels else np.zeros_like(score)
    names = tasks if len(tasks) == score.shape[1] and len(tasks) > 1 else [""] * score.shape[1]
    columns: dict[str, np.ndarray] = {"row": np.arange(len(score))}
    for j, name in enumerate(names):
        columns[f"label_{name}" if name else "label"] = label[:, j]
    for j, name in enumerate(names):
        columns[f"score_{name}" if name else "score"] = score[:, j]
    return columns, datamodule.report()


def write_scores(columns: dict[str, np.ndarray], out: Path) -> None:
    """The columns as CSV, or Parquet for ``.parquet``/``.pq``, written atomically."""
    from recframe.training.files import write_atomic

    if out.suffix.lower() in (".parquet", ".pq"):
        from recframe.data.table_files import import_pyarrow_parquet

        pq = import_pyarrow_parquet()
        import pyarrow as pa

        write_atomic(out, lambda f: pq.write_table(pa.table(columns), f))
        return
    names = list(columns)
    lines = [",".join(names)]
    lines += [",".join(f"{columns[n][i]:.7g}" if n != "row" else str(int(columns[n][i])) for n in names)
              for i in range(len(columns["row"]))]
    write_atomic(out, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def auc_by_task(columns: dict[str, np.ndarray]) -> dict[str, float]:
    """AUC of each score column against its label column, where the labels have both classes."""
    from recframe.training.metrics import binary_auc

    out = {}
    for name in columns:
        if name.startswith("score"):
            label = columns["label" + name[len("score"):]] > 0.5
            if 0 < label.sum() < len(label):
                out[name] = float(binary_auc(torch.from_numpy(columns[name]), torch.from_numpy(label).float()))
    return out


def predict_command(args: list[str]) -> int:
    """``recframe predict model=FILE out=FILE [input=FILE] [batch_size=N] [device=...] [data.KEY=VALUE ...]``."""
    from recframe.training.command_args import command_options

    parsed = command_options(args, OPTIONS, ("model", "out"), "recframe predict", USAGE)
    if parsed is None:
        return 2
    options, overrides = parsed
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # the reader's skip report
    device = torch.device(options.get("device", "cpu"))
    with storage.staged_input(options["model"]) as model:  # a local path, or a URL downloaded to a temporary file
        run, cfg, tasks = load_scorer(model, device)
    cfg = _config(cfg, options, overrides)
    scored = "test" if "input" in options else "val"
    start = time.perf_counter()
    columns, report = predict(run, cfg, tasks, scored, device)
    seconds = time.perf_counter() - start
    out = options["out"]
    with storage.staged_output(out) as local:  # a URL: written locally, then uploaded
        write_scores(columns, local)
    rows = len(columns["row"])
    summary: dict[str, Any] = {"rows": rows, "seconds": round(seconds, 3),
                               "samples_per_s": round(rows / seconds, 1) if seconds > 0 else None,
                               **{f"auc{k[len('score'):]}": round(v, 6) for k, v in auc_by_task(columns).items()},
                               **{k.removeprefix("data/"): v for k, v in report.items() if "skipped" in k and v}}
    print(f"recframe predict: wrote {out} ({'input ' + options['input'] if scored == 'test' else 'validation rows'})"
          f": {json.dumps(summary)}")
    return 0

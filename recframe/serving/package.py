"""Serving files: a ``ServingModel`` written as a ``torch.export`` program or an AOTInductor package, and read back.

Both are ``.pt2`` zip files that torch alone runs (recframe need not be installed where they are used):

- ``exported``: ``torch.export.load(path).module()(dense, values, lengths)``; the metadata (below) is
  the extra file ``recframe.json``.
- ``aoti``: ``torch._inductor.aoti_load_package(path)(dense, values, lengths)`` (compiled kernels for
  this machine's CPU, or its GPU when the model was on one; C++ loads it with
  ``torch::inductor::AOTIModelPackageLoader``); the metadata is the package's ``recframe`` entry
  (``get_metadata()["recframe"]``).

The metadata (JSON): ``format``, ``quantize``, ``sparse_features`` (the order of ``lengths``' rows
and of ``values``), ``dense_features``, ``tasks``, ``table_bytes``, ``global_step``, ``inputs`` (the
interface in words). The batch size and the number of ids are dynamic (any batch >= 1).

Example:
    >>> write_program(serving, Path("model.pt2"), "exported", {"global_step": 300})  # doctest: +SKIP
    >>> run, meta = read_program("model.pt2")  # doctest: +SKIP
    >>> probabilities = run(dense, values, lengths)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recframe.errors import RecframeError
from recframe.serving.program import ServingModel, example_inputs
from recframe.vocab import ExportFormat

META_FILE = "recframe.json"
INPUTS = ("dense [batch, num_dense] float32; values [num_ids] int64 (feature-major: feature 0's ids of sample 0, "
          "1, ..., then feature 1's; ids as the run's data source makes them, after data.id_mapping); "
          "lengths [num_sparse, batch] int64 ids per feature and sample")


class ServingFileError(RecframeError, ValueError):
    """A file that is not a serving program recframe wrote (or could not be written)."""


def export_program(serving: ServingModel | nn.Module, num_dense: int) -> torch.export.ExportedProgram:
    """``torch.export`` of ``serving`` with a dynamic batch size and id count.

    Args:
        serving: a ``ServingModel`` or ``retrieval.UserTower`` (``sparse_keys``; on the device the program is for).
        num_dense: dense features per sample.
    """
    device = next(serving.buffers()).device
    args = tuple(a.to(device) for a in example_inputs(num_dense, len(serving.sparse_keys)))
    batch, ids = torch.export.Dim("batch", min=1), torch.export.Dim("ids", min=0)
    with torch.no_grad():
        return torch.export.export(serving, args, strict=False,
                                   dynamic_shapes={"dense": {0: batch}, "values": {0: ids}, "lengths": {1: batch}})


def write_program(serving: ServingModel | nn.Module, out: Path, fmt: ExportFormat | str, meta: dict[str, Any],
                  num_dense: int) -> dict[str, Any]:
    """Export ``serving`` and write it to ``out`` atomically (a temporary file in its folder, then a rename).

    Args:
        serving: a ``ServingModel`` or ``retrieval.UserTower`` (``sparse_keys``, ``quantize``, ``table_bytes``).
        out: the ``.pt2`` file to write.
        fmt: ``exported`` or ``aoti``.
        meta: metadata to add to the program's own (``global_step``, ``config``, ...).
        num_dense: dense features per sample.

    Returns:
        The metadata written.
    """
    fmt = ExportFormat(fmt)
    meta = {"format": fmt.value, "quantize": serving.quantize.value, "sparse_features": serving.sparse_keys,
            "table_bytes": serving.table_bytes, "inputs": INPUTS, **meta}
    program = export_program(serving, num_dense)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".pt2", dir=out.parent)
    os.close(handle)
    try:
        if fmt == ExportFormat.exported:
            torch.export.save(program, tmp, extra_files={META_FILE: json.dumps(meta)})
        elif fmt == ExportFormat.aoti:
            torch._inductor.aoti_compile_and_package(
                program, package_path=tmp, inductor_configs={"aot_inductor.metadata": {"recframe": json.dumps(meta)}})
        else:
            raise ServingFileError(f"format={fmt}: write_program writes exported or aoti programs")
        os.replace(tmp, out)
    except OSError as error:
        raise ServingFileError(f"cannot write {out}: {type(error).__name__}: {error}") from error
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return meta


def program_format(path: str | Path) -> ExportFormat:
    """``exported`` or ``aoti`` for a ``.pt2`` file (by its members); a ServingFileError for anything else."""
    try:
        names = zipfile.ZipFile(path).namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise ServingFileError(f"{path} is not a .pt2 serving file ({type(error).__name__}: {error}); write one "
                               "with recframe export format=exported|aoti") from error
    if any("/data/aotinductor/" in n for n in names):
        return ExportFormat.aoti
    if any(n.endswith(("/models/model.json", "serialized_exported_program.json")) for n in names):  # (torch versions)
        return ExportFormat.exported
    raise ServingFileError(f"{path} is a zip file but neither a torch.export program nor an AOTInductor package")


def read_program(path: str | Path) -> tuple[Callable[..., torch.Tensor], dict[str, Any]]:
    """The callable ``(dense, values, lengths) -> probabilities`` of a serving file, and its metadata.

    Args:
        path: a file written by ``recframe export format=exported`` or ``format=aoti``.
    """
    fmt = program_format(path)
    if fmt == ExportFormat.exported:
        extra = {META_FILE: ""}
        run = torch.export.load(str(path), extra_files=extra).module()
        text = extra[META_FILE]
    else:
        runner = torch._inductor.aoti_load_package(str(path))
        run, text = runner, runner.get_metadata().get("recframe", "")
    if not text:
        raise ServingFileError(f"{path} holds no recframe metadata: it was not written by recframe export")
    return run, json.loads(text)

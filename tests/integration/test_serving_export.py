"""recframe export format=exported|aoti quantize=...: a program that torch runs without recframe and that scores
the validation batches as the trained model does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import run_recframe

SMALL = ["+experiment=dlrm", "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8",
         "tables.num_embeddings=1000", "data.batch_size=64", "trainer.enable_progress_bar=false",
         "logger.table_stats_every_n_steps=0", "trainer.max_steps=4", "trainer.val_check_interval=4",
         "data.num_val_batches=2"]

# Runs in a fresh interpreter where `import recframe` fails: the program needs torch only.
WITHOUT_RECFRAME = """
import json, sys, torch
sys.modules["recframe"] = None  # any import of recframe raises ImportError
path, inputs, fmt = sys.argv[1:4]
batches = torch.load(inputs)  # [(dense, values, lengths), ...]
if fmt == "aoti":
    run = torch._inductor.aoti_load_package(path)
    meta = json.loads(run.get_metadata()["recframe"])
else:
    extra = {"recframe.json": ""}
    run = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["recframe.json"])
with torch.no_grad():
    torch.save(torch.cat([run(*args) for args in batches]), inputs + ".out")
print(json.dumps({"sparse_features": meta["sparse_features"], "quantize": meta["quantize"]}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("serving") / "run"
    done = run_recframe("train", *SMALL, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir / "checkpoints" / "step-4"


def _validation_inputs(folder: Path) -> tuple[list, torch.Tensor, list[str]]:
    """The run's validation batches as the program's inputs, and the trained model's probabilities."""
    from recframe.training.builders import build_datamodule
    from recframe.training.export import trained_model

    model, cfg, _, _, _ = trained_model(folder)
    keys = list(cfg.features.sparse)
    inputs, want = [], []
    with torch.no_grad():
        for batch in build_datamodule(cfg).val_dataloader():
            kjt = batch.sparse_features
            inputs.append((batch.dense_features, kjt.values().long(), kjt.lengths().long().view(len(keys), -1)))
            want.append(torch.sigmoid(model(batch)))
    return inputs, torch.cat(want), keys


@pytest.mark.parametrize("quantize,tolerance", [pytest.param("none", 1e-5, marks=pytest.mark.slow), ("int8", 5e-3)])
def test_an_exported_program_runs_without_recframe(trained: Path, tmp_path: Path, quantize: str,
                                                   tolerance: float) -> None:
    out = tmp_path / "model.pt2"
    done = run_recframe("export", f"ckpt={trained}", f"out={out}", "format=exported", f"quantize={quantize}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"tables {quantize}" in done.stdout and "torch.export.load(path).module()" in done.stdout
    inputs, want, keys = _validation_inputs(trained)
    saved = str(tmp_path / "inputs.pt")
    torch.save(inputs, saved)
    ran = subprocess.run([sys.executable, "-c", WITHOUT_RECFRAME, str(out), saved, "exported"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout.splitlines()[-1]) == {"sparse_features": keys, "quantize": quantize}
    torch.testing.assert_close(torch.load(saved + ".out"), want, rtol=0, atol=tolerance)


def test_export_options_are_checked(trained: Path, tmp_path: Path) -> None:
    done = run_recframe("export", f"ckpt={trained}", f"out={tmp_path / 'm.pt'}", "format=onnx", "quantize=int3")
    assert done.returncode == 2
    assert "format 'onnx' is unknown; choose one of ['eager', 'exported', 'aoti', 'retrieval']" in done.stderr
    assert "quantize 'int3' is unknown" in done.stderr
    done = run_recframe("export", f"ckpt={trained}", f"out={tmp_path / 'm.pt'}", "quantize=int8")
    assert done.returncode == 2 and "quantize=int8 needs format=exported or format=aoti" in done.stderr


@pytest.mark.slow
def test_an_aoti_package_runs_without_recframe(trained: Path, tmp_path: Path) -> None:
    """AOTInductor compiles C++ for this CPU: about a minute on 2 cores."""
    out = tmp_path / "model.pt2"
    done = run_recframe("export", f"ckpt={trained}", f"out={out}", "format=aoti", "quantize=int4")
    assert done.returncode == 0, done.stderr[-3000:]
    inputs, want, keys = _validation_inputs(trained)
    saved = str(tmp_path / "inputs.pt")
    torch.save(inputs, saved)
    ran = subprocess.run([sys.executable, "-c", WITHOUT_RECFRAME, str(out), saved, "aoti"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout.splitlines()[-1]) == {"sparse_features": keys, "quantize": "int4"}
    torch.testing.assert_close(torch.load(saved + ".out"), want, rtol=0, atol=0.05)

"""Train from and to URLs, export to a URL, load and predict from it (issue 20, item 2).

The training run reads its CSV and spec through ``file://`` URLs and writes its checkpoints to one (another
process: ``memory://`` would not reach it); the checkpoint is then copied to ``memory://`` and ``recframe export``,
``load_exported`` and ``recframe predict`` run in this process with every path a ``memory://`` URL.
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import fsspec
import pytest
import torch

from recframe import storage
from tests.integration.helpers import run_recframe
from tests.integration.test_predict import QUICK, reference_scores, write_table

pytestmark = pytest.mark.integration


@pytest.mark.slow  # ~15 s on the 2-core VM (a training run and two exports)
def test_train_export_and_predict_with_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recframe.training.export import export_command, load_exported, trained_model
    from recframe.training.predict import predict_command

    write_table(tmp_path / "train.csv", 300, seed=0)
    write_table(tmp_path / "new.csv", 40, seed=1)
    (tmp_path / "spec.yaml").write_text("label: click\ndense: {price: {}}\ncategorical: {user: {rows: 50}, "
                                        "item: {rows: 50}}\n")
    store = f"file://{tmp_path}/bucket"
    done = run_recframe("train", "+experiment=tabular", f"data.path=file://{tmp_path}/train.csv",
                        f"data.spec=file://{tmp_path}/spec.yaml", *QUICK, f"hydra.run.dir={tmp_path / 'run'}",
                        f"checkpoint.dir={store}/checkpoints")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "bucket" / "checkpoints" / "step-6" / "manifest.json").is_file()

    bucket = f"memory://recframe-export-{uuid.uuid4().hex[:8]}"
    memory = fsspec.filesystem("memory")
    memory.put(str(tmp_path / "bucket" / "checkpoints" / "step-6"), f"{bucket}/ck/step-6".removeprefix("memory://"),
               recursive=True)
    storage.write_bytes(f"{bucket}/new.csv", (tmp_path / "new.csv").read_bytes())
    try:
        assert export_command([f"ckpt={bucket}/ck/step-6", f"out={bucket}/model.pt"]) == 0
        model, _ = load_exported(f"{bucket}/model.pt")
        trained, _, _, _, _ = trained_model(tmp_path / "bucket" / "checkpoints" / "step-6")
        for (name, a), b in zip(model.state_dict().items(), trained.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
        assert export_command([f"ckpt={bucket}/ck/step-6", f"out={bucket}/model.pt2", "format=exported"]) == 0
        assert predict_command([f"model={bucket}/model.pt2", f"input={bucket}/new.csv",
                                f"out={bucket}/scores.csv"]) == 0
        assert f"wrote {bucket}/scores.csv" in capsys.readouterr().out
        rows = list(csv.reader(io.StringIO(storage.read_text(f"{bucket}/scores.csv"))))
        want, labels = reference_scores(tmp_path / "bucket" / "checkpoints" / "step-6", tmp_path / "new.csv")
        got = torch.tensor([[float(v) for v in row] for row in rows[1:]])
        assert rows[0] == ["row", "label", "score"] and torch.equal(got[:, 1], labels)
        torch.testing.assert_close(got[:, 2], want, rtol=0, atol=1e-5)
    finally:
        storage.rmtree(bucket)

"""`recframe train` with its checkpoints at an fsspec URL resumes exactly like one on local disk (issue 20).

``memory://`` lives inside one process, so the URL runs are two ``recframe.cli.main`` calls in one child
process (:data:`TWO_RUNS`); ``file://`` goes through the same fsspec code across processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import run_recframe, scalars
from tests.integration.test_train import small_model

pytestmark = pytest.mark.integration

# Train to step 6 with checkpoints at a memory:// URL, plant an unfinished step-8 (data, no manifest: a writer
# killed before its commit marker), resume with ckpt_path=last to step 12, print the store's listing.
TWO_RUNS = """
import json, sys
import fsspec
from recframe.cli import main
run, url, common = sys.argv[1], sys.argv[2], sys.argv[3:]
first = main(["train", *common, "trainer.max_steps=6", f"hydra.run.dir={run}", f"checkpoint.dir={url}"])
fs, root = fsspec.core.url_to_fs(url)
after_first = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
fs.makedirs(root + "/step-8", exist_ok=True)
fs.pipe(root + "/step-8/__0_0.distcp", b"cut short")
second = main(["train", *common, "trainer.max_steps=12", f"hydra.run.dir={run}", f"checkpoint.dir={url}",
               "ckpt_path=last"])
after_second = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
print("RESULT " + json.dumps([first, after_first, second, after_second]))
"""


def common(tiny: list[str]) -> list[str]:
    return ["+experiment=dlrm", *small_model("dlrm"), *tiny, "model.dropout=0.2", "trainer.val_check_interval=4",
            "checkpoint.every_n_steps=4", "optim.schedule.warmup_steps=3"]


def local_run(tiny: list[str], run_dir: Path) -> None:
    result = run_recframe("train", *common(tiny), "trainer.max_steps=12", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = scalars(straight)["train/loss"], scalars(resumed)["train/loss"]
    assert [s for s, _ in b] == list(range(12))
    assert [v for _, v in a] == [v for _, v in b], "losses after resume must equal the uninterrupted local run's"
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_resume_from_a_url_equals_local_disk(scheme: str, tiny: list[str], tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    local_run(tiny, straight)
    url = "memory://bucket/run1/checkpoints" if scheme == "memory" else f"file://{tmp_path}/bucket/run1/checkpoints"
    child = subprocess.run([sys.executable, "-c", TWO_RUNS, str(resumed), url, *common(tiny)], capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    first, after_first, second, after_second = json.loads(child.stdout.split("RESULT ", 1)[1])
    assert (first, second) == (0, 0)
    assert after_first == ["step-4", "step-6"]
    assert "step-8 has no manifest.json: it was not finished" in child.stderr, "the unfinished folder is passed over"
    assert [n.rsplit("-", 1)[0] if n.startswith("abandoned") else n for n in after_second] == [
        "abandoned-step-8", "step-12", "step-8"], "set aside, then keep_last=2 of the resumed run's own"
    assert not (resumed / "checkpoints").exists(), "nothing was written to the run directory's checkpoints/"
    assert_same_run(straight, resumed)
    if scheme == "file":  # another process: recframe eval of the checkpoint at the URL
        done = run_recframe("eval", *common(tiny), f"ckpt_path={url}/step-12", f"hydra.run.dir={tmp_path / 'eval'}")
        assert done.returncode == 0, done.stderr[-3000:]
        evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        final = json.loads((resumed / "metrics.json").read_text())
        assert evaluated["checkpoint"] == f"{url}/step-12" and evaluated["val/auc"] == final["val/auc"]

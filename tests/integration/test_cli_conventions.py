"""The ``recframe`` command as users of Hydra and Lightning expect it (issue 18), end to end. The output of a default
run (items 3 and 5) is checked on test_train's run (helpers.assert_clean_output), Hydra's flags in-process
(tests/unit/test_hydra_flags.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.integration.helpers import run_recframe

pytestmark = pytest.mark.integration


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_run_without_a_gpu_is_one_line_before_anything_is_built(tmp_path: Path) -> None:
    result = run_recframe("train", "+experiment=dlrm", "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("recframe train: trainer.accelerator=gpu: no GPU is visible (torch "), last
    assert last.endswith("train on the CPU with trainer=cpu"), last
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "tensorboard").exists()


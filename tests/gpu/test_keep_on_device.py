"""On a GPU the tables and optimizer states are still on it after ``fit`` (recframe.training.keep_on_device)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from integration.helpers import TINY  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fit_leaves_tables_and_optimizer_states_on_the_gpu(tmp_path: Path) -> None:
    from recframe.config.compose import compose_config
    from recframe.training.app import _build_module, build_trainer
    from recframe.training.builders import build_datamodule

    cfg = compose_config(["+experiment=dlrm", *TINY, "trainer.accelerator=gpu", "trainer.max_steps=3",
                          "trainer.limit_val_batches=0", f"run_dir={tmp_path}"])
    module = _build_module(cfg)
    trainer = build_trainer(cfg, tmp_path, checkpoints=False)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 3
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    assert tensors and all(t.is_cuda for t in tensors.values()), [n for n, t in tensors.items() if not t.is_cuda]
    states = [s for group in trainer.optimizers[0].state.values() for s in group.values() if torch.is_tensor(s)]
    assert states and all(s.is_cuda for s in states if s.dim() > 0)

"""The model stays on its device when Lightning's fit ends (recframe.training.keep_on_device)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel
from pytorch_lightning.strategies import SingleDeviceStrategy

from recframe.training.keep_on_device import OneDeviceStrategy, one_device


class CountsCpuCalls(BoringModel):
    """BoringModel counting the calls of ``.cpu()`` (Lightning's teardown moves a model to the CPU by it)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_calls = 0

    def cpu(self):  # noqa: ANN201 (the module)
        self.cpu_calls += 1
        return super().cpu()


def _fit(strategy: pl.strategies.Strategy) -> tuple[CountsCpuCalls, pl.Trainer]:
    model = CountsCpuCalls()
    trainer = pl.Trainer(accelerator="cpu", devices=1, strategy=strategy, max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(model)
    return model, trainer


def test_lightning_moves_the_model_to_the_cpu_at_teardown() -> None:
    model, _ = _fit(SingleDeviceStrategy(device=torch.device("cpu")))
    assert model.cpu_calls == 1  # what OneDeviceStrategy leaves out (so the test below can fail)


def test_one_device_strategy_leaves_the_model_and_optimizers_where_they_are() -> None:
    strategy = OneDeviceStrategy(device=torch.device("cpu"))
    model, trainer = _fit(strategy)
    assert trainer.global_step == 2
    assert model.cpu_calls == 0
    assert "cpu" not in vars(model)  # the no-op was on the instance for the teardown only
    model.cpu()
    assert model.cpu_calls == 1
    assert len(strategy.optimizers) == 1  # given back after the teardown


@pytest.mark.parametrize(("accelerator", "expected"), [("cpu", "cpu"), ("gpu", "cuda:0"), ("cuda", "cuda:0")])
def test_one_device(accelerator: str, expected: str) -> None:
    assert one_device(accelerator) == torch.device(expected)


def test_auto_is_the_gpu_where_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert one_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert one_device("auto") == torch.device("cuda", 0)


def test_a_one_process_run_trains_with_it(tmp_path) -> None:  # noqa: ANN001 (pytest's tmp_path)
    from recframe.config.compose import compose_config
    from recframe.training.app import build_trainer

    cfg = compose_config(["+experiment=dlrm", f"run_dir={tmp_path}"])
    trainer = build_trainer(cfg, tmp_path, checkpoints=False)
    assert isinstance(trainer.strategy, OneDeviceStrategy)
    assert trainer.strategy.root_device == torch.device("cpu")

"""The GPU pre-check (recframe.training.devices): what a run asks for against what the machine shows."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from recframe.errors import ConfigError
from recframe.training.devices import check_devices


def _cfg(accelerator: str, devices: int):  # noqa: ANN202
    return OmegaConf.create({"trainer": {"accelerator": accelerator, "devices": devices}})


def test_cpu_and_auto_runs_are_not_checked() -> None:
    def never() -> tuple[int, str]:
        raise AssertionError("a CPU run does not look for GPUs")

    check_devices(_cfg("cpu", 4), visible=never)
    check_devices(_cfg("auto", 1), visible=never)


def test_no_gpu_names_what_was_found() -> None:
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=cuda: no GPU is visible \(torch 2.11.0\+cu128 finds "
                                          r"no CUDA device or driver\); train on the CPU with trainer=cpu$"):
        check_devices(_cfg("cuda", 1), visible=lambda: (0, "torch 2.11.0+cu128 finds no CUDA device or driver"))


def test_fewer_gpus_than_devices() -> None:
    check_devices(_cfg("gpu", 2), visible=lambda: (2, "2 x NVIDIA H100"))
    with pytest.raises(ConfigError, match=r"trainer.devices=4 .* shows 2 x NVIDIA H100; use trainer.devices=2"):
        check_devices(_cfg("gpu", 4), visible=lambda: (2, "2 x NVIDIA H100"))

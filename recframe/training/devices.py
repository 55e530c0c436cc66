"""The devices a run asks for against those this machine has: checked before anything is built.

``trainer.accelerator=gpu`` on a machine where torch sees no GPU (a CPU-only build of torch, no
driver, ``CUDA_VISIBLE_DEVICES`` hiding them) or fewer GPUs than ``trainer.devices`` ends the command
with one line that says what was found, exit code 2, before a model or a process is made (Lightning
would fail with a traceback after building everything). ``recframe plan`` plans for GPUs anywhere and is
not checked.

Example:
    >>> from omegaconf import OmegaConf
    >>> check_devices(OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 2}}))
    >>> cfg = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}})
    >>> check_devices(cfg, visible=lambda: (0, "torch 2.13.0+cpu is a CPU-only build"))
    Traceback (most recent call last):
    ...
    recframe.errors.ConfigError: trainer.accelerator=gpu: no GPU is visible (torch 2.13.0+cpu is a CPU-only build); \
train on the CPU with trainer=cpu
"""

from __future__ import annotations

import os
from collections.abc import Callable

from omegaconf import DictConfig

from recframe.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")  # Lightning's names of the CUDA accelerator


def visible_gpus() -> tuple[int, str]:
    """How many CUDA devices torch sees, and what was found, in words (the build, the devices, the mask)."""
    import torch

    count = torch.cuda.device_count()
    if torch.version.cuda is None:
        found = f"torch {torch.__version__} is a CPU-only build"
    elif count == 0:
        found = f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device or driver"
    else:
        names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
        found = f"{count} x {', '.join(names)}"
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    return count, found + (f"; CUDA_VISIBLE_DEVICES={mask!r}" if mask is not None else "")


def check_devices(cfg: DictConfig, visible: Callable[[], tuple[int, str]] = visible_gpus) -> None:
    """Raise a ConfigError if the run asks for more GPUs (per node) than this machine shows.

    Args:
        cfg: the run config (``trainer.accelerator``, ``trainer.devices``).
        visible: the GPU count and what was found (``visible_gpus``; tests pass another).
    """
    accelerator, devices = str(cfg.trainer.accelerator), int(cfg.trainer.devices)
    if accelerator not in GPU_ACCELERATORS:
        return
    count, found = visible()
    if count == 0:
        raise ConfigError(f"trainer.accelerator={accelerator}: no GPU is visible ({found}); train on the CPU with "
                          "trainer=cpu")
    if count < devices:
        raise ConfigError(f"trainer.devices={devices} with trainer.accelerator={accelerator}: this machine shows "
                          f"{found}; use trainer.devices={count}")

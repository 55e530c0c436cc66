"""Session set-up shared by every test tier.

Triton's kernels run on CPU through its interpreter, which Triton reads from ``TRITON_INTERPRET``
when it is first imported (``import pytorch_lightning`` already imports it, through torch), so
the variable is set here, before any test module is imported, on machines without a GPU. On a
GPU machine it stays unset and the triton kernels compile (``tests/gpu``).
"""

from __future__ import annotations

import os
import sys

import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

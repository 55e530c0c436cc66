"""The sparse optimizer's LR schedule (issue 19, item 2) changes the lr the fused kernels update with: after N
steps under warmup, the last step's update of a row (sgd: lr * gradient) and the kernel's lr are the schedule's."""

from __future__ import annotations

import pytest
import torch

from recframe.config.schema import ScheduleConfig
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.sparse import KeyedJaggedTensor
from recframe.training.schedule import lr_factor
from recframe.training.sparse_lr import SparseLrSchedule
from recframe.vocab import LrDecay


def _backends() -> list[str]:
    from recframe.embedding.kernels.fbgemm import fbgemm_import_error

    return ["torch"] + ([] if fbgemm_import_error() else ["fbgemm"])


@pytest.mark.parametrize("backend", _backends())
def test_the_kernels_update_with_the_scheduled_lr(backend: str) -> None:
    torch.manual_seed(0)
    tables = [TableConfig(name="t", num_embeddings=8, embedding_dim=4, feature_names=["f"])]
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="sgd", lr=0.5), backend=backend)
    cfg = ScheduleConfig(warmup_steps=4, decay=LrDecay.linear, decay_start_step=4, decay_steps=4, min_lr_ratio=0.1)
    schedule = SparseLrSchedule([ebc], cfg)
    kjt = KeyedJaggedTensor.from_lengths(["f"], torch.tensor([3]), torch.tensor([1]))
    for step in range(7):
        schedule.step(step)
        before = ebc.state_dict()["t.weight"][3].clone()
        ebc(kjt).values().sum().backward()  # gradient of row 3: ones
        change = ebc.state_dict()["t.weight"][3] - before
        expected = 0.5 * lr_factor(step, cfg)
        assert schedule.lr == pytest.approx(expected)
        assert torch.allclose(change, torch.full((4,), -expected), atol=1e-6), (step, change, expected)
    if backend == "fbgemm":
        assert ebc.kernels[0].tbe.learning_rate_tensor.item() == pytest.approx(0.5 * lr_factor(6, cfg))


def test_no_schedule_leaves_the_kernels_alone() -> None:
    tables = [TableConfig(name="t", num_embeddings=8, embedding_dim=4, feature_names=["f"])]
    opt = SparseOptimizer(name="sgd", lr=0.5)
    schedule = SparseLrSchedule([EmbeddingBagCollection(tables, opt, backend="torch")], ScheduleConfig())
    schedule.step(0)
    schedule.step(100)
    assert opt.lr == 0.5 and schedule.lr == 0.5

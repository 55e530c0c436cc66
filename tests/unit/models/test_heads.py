"""Multi-task heads: output shapes and the weighted per-task loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recframe.models import MultiTaskHead, Task, multi_task_loss


def test_head_shapes() -> None:
    one = MultiTaskHead(8)
    assert one(torch.randn(5, 8)).shape == (5,) and one(torch.randn(1, 8)).shape == (1,)
    two = MultiTaskHead(8, [Task("click"), Task("purchase")])
    assert two(torch.randn(5, 8)).shape == (5, 2) and two.num_tasks == 2


def test_loss_is_the_weighted_sum_of_per_task_bce() -> None:
    torch.manual_seed(0)
    tasks = [Task("click", weight=1.0), Task("purchase", weight=3.0)]
    logits, labels = torch.randn(10, 2), torch.randint(0, 2, (10, 2)).float()
    out = multi_task_loss(logits, labels, tasks)
    click = F.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0])
    purchase = F.binary_cross_entropy_with_logits(logits[:, 1], labels[:, 1])
    assert torch.allclose(out.per_task["click"], click) and torch.allclose(out.per_task["purchase"], purchase)
    assert torch.allclose(out.total, click + 3.0 * purchase)
    muted = multi_task_loss(logits, labels, [Task("click"), Task("purchase", weight=0.0)])
    assert torch.allclose(muted.total, click)


def test_loss_gradient_follows_the_weights() -> None:
    logits = torch.zeros(4, 2, requires_grad=True)
    labels = torch.ones(4, 2)
    multi_task_loss(logits, labels, [Task("a", 1.0), Task("b", 2.0)]).total.backward()
    assert logits.grad is not None
    assert torch.allclose(logits.grad[:, 1], 2.0 * logits.grad[:, 0])


def test_single_task_accepts_flat_or_column_labels() -> None:
    logits, labels = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    flat = multi_task_loss(logits, labels, [Task("label")]).total
    column = multi_task_loss(logits, labels.unsqueeze(1), [Task("label")]).total
    assert torch.allclose(flat, column)
    assert torch.allclose(flat, F.binary_cross_entropy_with_logits(logits, labels))


def test_bad_shapes_and_tasks_are_reported() -> None:
    with pytest.raises(ValueError, match=r"2 tasks .* \[batch, 2\]"):
        multi_task_loss(torch.zeros(3), torch.zeros(3), [Task("a"), Task("b")])
    with pytest.raises(ValueError, match="unique"):
        MultiTaskHead(4, [Task("a"), Task("a")])
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskHead(4, [])
    with pytest.raises(ValueError, match="weight"):
        MultiTaskHead(4, [Task("a", weight=-1.0)])

"""Table health's numbers, read from the device in one go, against plain Python over the same rows."""

from __future__ import annotations

import math

import pytest
import torch

from recframe.training.table_health import HISTOGRAM_BINS, NORM_NUMBERS, _table_numbers


def test_table_numbers_match_plain_python() -> None:
    torch.manual_seed(0)
    weight = torch.randn(57, 5)
    state = torch.rand(57)
    counted = torch.tensor([0.5, 0.25, 3.0], dtype=torch.float64)
    values = _table_numbers(weight, [state], counted).tolist()
    norms = [math.sqrt(sum(x * x for x in row)) for row in weight.tolist()]
    total, high, num, low, squares = values[:NORM_NUMBERS]
    assert (num, total, high, low) == pytest.approx((57, sum(norms), max(norms), min(norms)), rel=1e-6)
    assert squares == pytest.approx(sum(n * n for n in norms), rel=1e-6)
    histogram = values[NORM_NUMBERS:NORM_NUMBERS + HISTOGRAM_BINS]
    width = (max(norms) - min(norms)) / HISTOGRAM_BINS
    expected = [0] * HISTOGRAM_BINS
    for n in norms:
        expected[min(HISTOGRAM_BINS - 1, int((n - min(norms)) / width))] += 1
    assert histogram == expected
    rest = values[NORM_NUMBERS + HISTOGRAM_BINS:]
    assert rest[:2] == pytest.approx([state.double().mean().item(), state.max().item()])
    assert rest[2:] == [0.5, 0.25, 3.0]


def test_equal_rows_fall_in_the_first_bucket() -> None:
    values = _table_numbers(torch.ones(4, 3), [], None).tolist()
    assert values[NORM_NUMBERS] == 4 and sum(values[NORM_NUMBERS:]) == 4

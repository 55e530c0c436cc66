"""ops.repeat_segments: both paths equal repeat_interleave (empty segments, one segment, none)."""

from __future__ import annotations

import pytest
import torch

from recframe.sparse.ops import repeat_segments


@pytest.mark.parametrize("by_search", [True, False])
@pytest.mark.parametrize("lengths", [[2, 0, 3], [0, 0, 4, 0], [5], [0, 0], [1, 1, 1, 1, 1, 1, 1]])
def test_repeat_segments_equals_repeat_interleave(by_search: bool, lengths: list[int]) -> None:
    lengths_t = torch.tensor(lengths)
    values = torch.arange(10, 10 + len(lengths)) * 3
    got = repeat_segments(values, lengths_t, sum(lengths), by_search=by_search)
    assert torch.equal(got, values.repeat_interleave(lengths_t))


def test_repeat_segments_keeps_the_values_dtype_with_int32_lengths() -> None:
    values = torch.tensor([True, False, True])
    got = repeat_segments(values, torch.tensor([1, 2, 2], dtype=torch.int32), 5, by_search=True)
    assert got.dtype == torch.bool and got.tolist() == [True, False, False, True, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_repeat_segments_on_cuda_searches() -> None:
    lengths = torch.randint(0, 50, (26,), device="cuda")
    values = torch.arange(26, device="cuda") * 1000
    total = int(lengths.sum())
    assert torch.equal(repeat_segments(values, lengths, total), values.repeat_interleave(lengths))

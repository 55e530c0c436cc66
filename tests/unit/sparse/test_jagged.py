"""Property tests of JaggedTensor against a reference that is a plain list of rows.

Covers construction from lengths and from offsets, to_dense, to_padded_dense (desired length
shorter than, equal to and longer than the longest bag), to_padded_dense_weights, from_dense, to
and pickling, on both op paths, with empty rows, zero rows, and weights present and absent.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from recframe.sparse import JaggedTensor

from .strategies import SETTINGS, RefJT, assert_jt_matches, jt_from_ref, ref_jts

EDGE_CASES = [
    RefJT([], None, torch.int64),  # no rows
    RefJT([[]], [[]], torch.int64),  # one empty row
    RefJT([[], [], []], None, torch.int32),  # only empty rows
    RefJT([[5, 6, 7]], [[1.0, 2.0, 3.0]], torch.int64),  # a batch of 1
    RefJT([[1.5], [], [2.5, -1.0]], None, torch.float32),
]


def edge_cases(test):
    for ref in EDGE_CASES:
        test = example(ref=ref)(test)
    return test


def padded_reference(rows: list[list], length: int, pad) -> list[list]:
    return [row[:length] + [pad] * max(0, length - len(row)) for row in rows]


@SETTINGS
@edge_cases
@given(ref=ref_jts())
def test_construction_and_accessors(backend, ref):
    for via in ("lengths", "offsets"):
        jt = jt_from_ref(ref, via)
        assert_jt_matches(jt, ref.rows, ref.wrows, ref.dtype)
        if ref.wrows is None:
            with pytest.raises(ValueError, match="(?i)no weights"):
                jt.weights()
        else:
            assert jt.weights_or_none().tolist() == [w for r in ref.wrows for w in r]


def padded_edge_cases(test):
    for ref in EDGE_CASES:
        for desired in (None, 0, 2, 7):
            test = example(ref=ref, pad=-1, desired=desired)(test)
    return test


@SETTINGS
@padded_edge_cases
@given(ref=ref_jts(), pad=st.integers(-3, 3), desired=st.one_of(st.none(), st.integers(0, 8)))
def test_to_padded_dense(backend, ref, pad, desired):
    # desired_length: None (the longest bag), or shorter / equal / longer (bags have 0..5 values)
    jt = jt_from_ref(ref)
    longest = max(ref.lengths(), default=0)
    length = longest if desired is None else desired
    pad_value = float(pad)  # an integer-valued float, exact in every dtype
    expected_pad = pad if ref.dtype != torch.float32 else pad_value
    out = jt.to_padded_dense(desired_length=desired, padding_value=pad_value)
    assert out.shape == (len(ref.rows), length)
    assert out.dtype == ref.dtype
    assert out.tolist() == padded_reference(ref.rows, length, expected_pad)

    weights = jt.to_padded_dense_weights(desired_length=desired, padding_value=pad_value)
    if ref.wrows is None:
        assert weights is None
    else:
        assert weights.shape == (len(ref.rows), length)
        assert weights.tolist() == padded_reference(ref.wrows, length, pad_value)


@pytest.mark.parametrize("desired", [None, 0, 1, 2, 5])
def test_to_padded_dense_default_padding_is_zero(backend, desired):
    jt = JaggedTensor(torch.tensor([3, 4, 5]), lengths=torch.tensor([2, 0, 1]))
    rows = [[3, 4], [], [5]]
    length = 2 if desired is None else desired
    assert jt.to_padded_dense(desired).tolist() == padded_reference(rows, length, 0)


@SETTINGS
@edge_cases
@given(ref=ref_jts())
def test_from_dense_round_trip(backend, ref):
    dense = [torch.tensor(r, dtype=ref.dtype) for r in ref.rows]
    wdense = None if ref.wrows is None else [torch.tensor(r, dtype=torch.float32) for r in ref.wrows]
    jt = JaggedTensor.from_dense(dense, weights=wdense)
    # with no rows at all there is no tensor to take a dtype from
    assert_jt_matches(jt, ref.rows, ref.wrows, ref.dtype if ref.rows else None)
    assert [t.tolist() for t in jt.to_dense()] == ref.rows
    if ref.wrows is not None:
        assert [w.tolist() for w in jt.to_dense_weights()] == ref.wrows


def test_from_dense_rejects_mismatched_weights(backend):
    with pytest.raises(ValueError, match="(?i)weights"):
        JaggedTensor.from_dense([torch.tensor([1, 2]), torch.tensor([3])], weights=[torch.ones(2), torch.ones(2)])


@SETTINGS
@given(ref=ref_jts(), non_blocking=st.booleans())
def test_to_cpu(backend, ref, non_blocking):
    for via in ("lengths", "offsets"):
        out = jt_from_ref(ref, via).to(torch.device("cpu"), non_blocking=non_blocking)
        assert out.values().device.type == "cpu"
        assert_jt_matches(out, ref.rows, ref.wrows, ref.dtype)


@SETTINGS
@edge_cases
@given(ref=ref_jts())
def test_pickle_round_trip(backend, ref):
    jt = jt_from_ref(ref)
    assert_jt_matches(pickle.loads(pickle.dumps(jt)), ref.rows, ref.wrows, ref.dtype)

"""Property tests of KeyedTensor against a reference of per-key column blocks (lists of rows).

Covers the accessors, kt[key], to_dict, from_tensor_list, pickling, and regroup: its outputs
equal the Python concatenation of the groups' blocks, and its gradients land on exactly the
columns each group took (summed where a key is used by several groups).
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recframe.sparse import KeyedTensor

from .strategies import KEY_POOL, SETTINGS, RefKT, cumsum0, kt_from_ref, ref_kts


def assert_kt_matches(kt, ref: RefKT) -> None:
    assert isinstance(kt, KeyedTensor)
    assert list(kt.keys()) == ref.keys
    assert kt.length_per_key() == ref.dims
    assert kt.offset_per_key() == cumsum0(ref.dims)
    assert kt.values().shape == (ref.batch, sum(ref.dims))
    assert kt.values().tolist() == ref.rows()
    d = kt.to_dict()
    assert list(d) == ref.keys
    for k, key in enumerate(ref.keys):
        assert kt[key].shape == (ref.batch, ref.dims[k])
        assert kt[key].tolist() == ref.cols[k]
        assert d[key].tolist() == ref.cols[k]


@SETTINGS
@given(ref=ref_kts())
def test_accessors(backend, ref):
    assert_kt_matches(kt_from_ref(ref), ref)


@SETTINGS
@given(ref=ref_kts())
def test_from_tensor_list(backend, ref):
    tensors = [
        torch.tensor(c, dtype=torch.float32).reshape(ref.batch, d) for c, d in zip(ref.cols, ref.dims, strict=True)
    ]
    assert_kt_matches(KeyedTensor.from_tensor_list(ref.keys, tensors), ref)


@SETTINGS
@given(ref=ref_kts())
def test_pickle_round_trip(backend, ref):
    assert_kt_matches(pickle.loads(pickle.dumps(kt_from_ref(ref))), ref)


@SETTINGS
@given(ref=ref_kts(), non_blocking=st.booleans())
def test_to_cpu(backend, ref, non_blocking):
    out = kt_from_ref(ref).to(torch.device("cpu"), non_blocking=non_blocking)
    assert out.values().device.type == "cpu"
    assert_kt_matches(out, ref)


def test_missing_key_names_it(backend):
    kt = KeyedTensor(["a"], [2], torch.zeros(3, 2))
    with pytest.raises(KeyError, match="nope"):
        kt["nope"]


def test_width_mismatch_is_rejected(backend):
    with pytest.raises(ValueError, match="(?i)columns|sum"):
        KeyedTensor(["a", "b"], [2, 3], torch.zeros(4, 4))


@st.composite
def kts_and_groups(draw):
    """1..3 KeyedTensors with disjoint keys and one batch size, and 0..4 groups of their keys."""
    batch = draw(st.integers(0, 6))
    keys = draw(st.lists(st.sampled_from(KEY_POOL), unique=True, min_size=1, max_size=6))
    cuts = sorted(draw(st.lists(st.integers(1, len(keys)), max_size=2)))
    bounds = [0, *cuts, len(keys)]
    refs = [draw(ref_kts(keys=keys[a:b], batch=batch)) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    # groups may repeat a key, use it in several groups, leave keys out, and mix sources
    groups = draw(st.lists(st.lists(st.sampled_from(keys), min_size=1, max_size=5), max_size=4))
    return refs, groups


def locate(refs: list[RefKT], key: str) -> tuple[int, int, int]:
    """(source index, first column, dim) of ``key``."""
    for i, ref in enumerate(refs):
        if key in ref.keys:
            k = ref.keys.index(key)
            return i, cumsum0(ref.dims)[k], ref.dims[k]
    raise AssertionError(key)


def block(refs: list[RefKT], key: str) -> list[list[float]]:
    """The [batch][dim] rows of ``key``."""
    i = locate(refs, key)[0]
    return refs[i].cols[refs[i].keys.index(key)]


@SETTINGS
@given(refs_groups=kts_and_groups())
def test_regroup(backend, refs_groups):
    refs, groups = refs_groups
    out = KeyedTensor.regroup([kt_from_ref(r) for r in refs], groups)
    assert len(out) == len(groups)
    batch = refs[0].batch
    for tensor, group in zip(out, groups, strict=True):
        expected = [[x for key in group for x in block(refs, key)[b]] for b in range(batch)]
        width = sum(locate(refs, key)[2] for key in group)
        assert tensor.shape == (batch, width)
        assert tensor.tolist() == expected


@SETTINGS
@given(refs_groups=kts_and_groups(), seed=st.integers(0, 2**31 - 1))
def test_regroup_gradients_reach_the_right_columns(backend, refs_groups, seed):
    refs, groups = refs_groups
    leaves = [r.values().requires_grad_() for r in refs]
    out = KeyedTensor.regroup([KeyedTensor(r.keys, r.dims, v) for r, v in zip(refs, leaves, strict=True)], groups)
    gen = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(t.shape, generator=gen) for t in out]
    # the expected gradient, column block by column block
    expected = [torch.zeros_like(v) for v in leaves]
    for g, group in zip(upstream, groups, strict=True):
        col = 0
        for key in group:
            i, start, dim = locate(refs, key)
            expected[i][:, start:start + dim] += g[:, col:col + dim]
            col += dim
    used = {locate(refs, key)[0] for group in groups for key in group}
    if not used:
        return  # no group: nothing to differentiate
    torch.autograd.backward(out, upstream)
    for i, (leaf, exp) in enumerate(zip(leaves, expected, strict=True)):
        if i in used:
            assert leaf.grad is not None, f"no gradient reached source {i}"
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(exp)
        torch.testing.assert_close(grad, exp, rtol=1e-6, atol=1e-6)


def test_regroup_unknown_key_names_it(backend):
    kt = KeyedTensor(["a"], [1], torch.zeros(2, 1))
    with pytest.raises((KeyError, ValueError), match="zzz"):
        KeyedTensor.regroup([kt], [["a", "zzz"]])

"""Property tests of KeyedJaggedTensor against the plain-Python reference in strategies.py.

Each op is applied to a random KJT and, by ordinary list manipulation, to its reference; the
result is read back through every accessor (``assert_kjt_matches``). Every test runs on both op
paths (the ``backend`` fixture). The strategy covers empty bags, batches of 0 and 1, keys with no
ids at all, no keys at all, weights present and absent, int32/int64 ids and lengths.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from recframe.sparse import JaggedTensor, KeyedJaggedTensor

from .strategies import (
    SETTINGS,
    RefKJT,
    assert_jt_matches,
    assert_kjt_matches,
    kjt_from_ref,
    kjt_tensors,
    needs_cuda,
    ref_kjts,
)

# Hand-picked edge cases, run on top of the random examples.
EDGE_CASES = [
    RefKJT([], [], None, 0),  # no keys, no samples
    RefKJT(["a", "b"], [[], []], [[], []], 0),  # keys but a batch of 0
    RefKJT(["a"], [[[7, 8, 9]]], None, 1),  # a batch of 1
    RefKJT(["a", "b"], [[[], []], [[1], [2, 3]]], [[[], []], [[0.5], [1.0, -2.0]]], 2),  # "a" has no ids
    RefKJT(["a", "b", "c"], [[[]], [[]], [[]]], None, 1, torch.int32, torch.int32),  # all bags empty
]


def edge_cases(test):
    for ref in EDGE_CASES:
        test = example(ref=ref)(test)
    return test


# ------------------------------------------------------------------------------------------------
# construction and accessors
# ------------------------------------------------------------------------------------------------
@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_from_lengths_matches_reference(backend, ref):
    assert_kjt_matches(kjt_from_ref(ref, "lengths"), ref)


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_from_offsets_matches_reference(backend, ref):
    assert_kjt_matches(kjt_from_ref(ref, "offsets"), ref)


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_constructor_matches_reference(backend, ref):
    assert_kjt_matches(kjt_from_ref(ref, "init"), ref)


@SETTINGS
@given(ref=ref_kjts())
def test_offsets_round_trip_to_lengths_and_back(backend, ref):
    a = kjt_from_ref(ref, "lengths")
    b = KeyedJaggedTensor.from_offsets(a.keys(), a.values(), a.offsets(), a.weights_or_none(), stride=a.stride())
    c = KeyedJaggedTensor.from_lengths(b.keys(), b.values(), b.lengths(), b.weights_or_none(), stride=b.stride())
    assert_kjt_matches(b, ref)
    assert_kjt_matches(c, ref)


@SETTINGS
@given(ref=ref_kjts().filter(lambda r: len(r.keys) > 0))
def test_stride_is_inferred_from_lengths(backend, ref):
    values, lengths, weights = kjt_tensors(ref)
    assert_kjt_matches(KeyedJaggedTensor.from_lengths(ref.keys, values, lengths, weights), ref)
    offsets = torch.tensor(ref.flat_offsets(), dtype=ref.len_dtype)
    assert_kjt_matches(KeyedJaggedTensor.from_offsets(ref.keys, values, offsets, weights), ref)


@pytest.mark.parametrize("keys,stride", [((), 0), (("a", "b"), 3), (("x",), 0)])
def test_empty(backend, keys, stride):
    kjt = KeyedJaggedTensor.empty(keys=list(keys), stride=stride)
    ref = RefKJT(list(keys), [[[] for _ in range(stride)] for _ in keys], None, stride)
    assert_kjt_matches(kjt, ref, check_id_dtype=False)
    assert not kjt.values().is_floating_point()


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_getitem_and_key_index(backend, ref):
    kjt = kjt_from_ref(ref)
    for k, key in enumerate(ref.keys):
        assert kjt.key_index(key) == k
        jt = kjt[key]
        assert isinstance(jt, JaggedTensor)
        assert_jt_matches(jt, ref.bags[k], None if ref.wbags is None else ref.wbags[k], ref.id_dtype)


@pytest.mark.parametrize("missing", ["nope", "F0"])
def test_getitem_missing_key_names_it(backend, missing):
    kjt = kjt_from_ref(RefKJT(["f0"], [[[1]]], None, 1))
    with pytest.raises((KeyError, ValueError), match=missing):
        kjt[missing]


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_to_dict(backend, ref):
    d = kjt_from_ref(ref).to_dict()
    assert list(d) == ref.keys
    for k, key in enumerate(ref.keys):
        assert_jt_matches(d[key], ref.bags[k], None if ref.wbags is None else ref.wbags[k], ref.id_dtype)


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_from_jt_dict_of_to_dict_round_trip(backend, ref):
    out = KeyedJaggedTensor.from_jt_dict(kjt_from_ref(ref).to_dict())
    if ref.keys:
        assert_kjt_matches(out, ref)
    else:  # no key carries the batch size
        assert out.keys() == [] and out.values().numel() == 0


# ------------------------------------------------------------------------------------------------
# split / permute / concat
# ------------------------------------------------------------------------------------------------
@st.composite
def ref_and_split_sizes(draw):
    ref = draw(ref_kjts())
    # a random composition of K, zeros allowed anywhere (including several in a row)
    cuts = sorted(draw(st.lists(st.integers(0, len(ref.keys)), max_size=4)))
    bounds = [0, *cuts, len(ref.keys)]
    sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    return ref, sizes


@SETTINGS
@given(ref_sizes=ref_and_split_sizes())
def test_split(backend, ref_sizes):
    ref, sizes = ref_sizes
    parts = kjt_from_ref(ref).split(sizes)
    assert len(parts) == len(sizes)
    start = 0
    for part, size in zip(parts, sizes, strict=True):
        assert_kjt_matches(part, ref.select(list(range(start, start + size))))
        start += size


@pytest.mark.parametrize("sizes", [[1], [3, 1], [-1, 3]])
def test_split_sizes_must_sum_to_number_of_keys(backend, sizes):
    kjt = kjt_from_ref(RefKJT(["a", "b"], [[[1]], [[2]]], None, 1))
    with pytest.raises(ValueError, match="(?i)sum|keys"):
        kjt.split(sizes)


@st.composite
def ref_and_permutation(draw):
    ref = draw(ref_kjts())
    k = len(ref.keys)
    indices = draw(st.lists(st.integers(0, k - 1), max_size=2 * k)) if k else []
    return ref, indices


@SETTINGS
@example(ref_indices=(RefKJT(["a", "b"], [[[1], [2, 3]], [[4], []]], None, 2), [1, 1, 0]))
@example(ref_indices=(RefKJT(["a", "b"], [[[1], [2, 3]], [[4], []]], [[[1.0], [2.0, 3.0]], [[4.0], []]], 2), [1, 0, 0]))
@example(ref_indices=(RefKJT(["a", "b"], [[[1], [2, 3]], [[4], []]], None, 2), []))
@given(ref_indices=ref_and_permutation())
def test_permute(backend, ref_indices):
    ref, indices = ref_indices
    out = kjt_from_ref(ref).permute(indices)
    assert_kjt_matches(out, ref.select(indices))


@pytest.mark.parametrize("indices", [[2], [-1], [0, 5]])
def test_permute_out_of_range_is_rejected(backend, indices):
    kjt = kjt_from_ref(RefKJT(["a", "b"], [[[1]], [[2]]], None, 1))
    with pytest.raises((ValueError, IndexError), match="(?i)range|index"):
        kjt.permute(indices)


@st.composite
def refs_to_concat(draw):
    """One reference cut into 2..4 consecutive key groups (some possibly keyless)."""
    whole = draw(ref_kjts())
    cuts = sorted(draw(st.lists(st.integers(0, len(whole.keys)), min_size=1, max_size=3)))
    bounds = [0, *cuts, len(whole.keys)]
    return whole, [whole.select(list(range(a, b))) for a, b in zip(bounds, bounds[1:], strict=False)]


@SETTINGS
@given(whole_parts=refs_to_concat())
def test_concat(backend, whole_parts):
    whole, parts = whole_parts
    out = KeyedJaggedTensor.concat([kjt_from_ref(p) for p in parts])
    assert_kjt_matches(out, whole)


@SETTINGS
@given(ref_sizes=ref_and_split_sizes())
def test_concat_of_split_is_identity(backend, ref_sizes):
    ref, sizes = ref_sizes
    assert_kjt_matches(KeyedJaggedTensor.concat(kjt_from_ref(ref).split(sizes)), ref)


def test_concat_rejects_different_batch_sizes(backend):
    a = kjt_from_ref(RefKJT(["a"], [[[1], [2]]], None, 2))
    b = kjt_from_ref(RefKJT(["b"], [[[3]]], None, 1))
    with pytest.raises(ValueError, match="(?i)stride|batch"):
        KeyedJaggedTensor.concat([a, b])


# ------------------------------------------------------------------------------------------------
# devices, memory, pickling
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(ref=ref_kjts(), non_blocking=st.booleans(), via=st.sampled_from(["lengths", "offsets"]))
def test_to_cpu(backend, ref, non_blocking, via):
    out = kjt_from_ref(ref, via).to(torch.device("cpu"), non_blocking=non_blocking)
    assert out.values().device.type == "cpu"
    assert_kjt_matches(out, ref)
    assert_kjt_matches(kjt_from_ref(ref, via).to("cpu"), ref)


@needs_cuda
@SETTINGS
@given(ref=ref_kjts())
def test_pin_memory_to_cuda_and_record_stream(backend, ref):
    pinned = kjt_from_ref(ref).pin_memory()
    for t in (pinned.values(), pinned.lengths()):
        assert t.is_pinned() or t.numel() == 0
    assert_kjt_matches(pinned, ref)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        on_gpu = pinned.to(torch.device("cuda"), non_blocking=True)
    on_gpu.record_stream(torch.cuda.current_stream())
    stream.synchronize()
    assert on_gpu.values().is_cuda
    assert_kjt_matches(on_gpu, ref)


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_pickle_round_trip(backend, ref):
    kjt = kjt_from_ref(ref)
    assert_kjt_matches(pickle.loads(pickle.dumps(kjt)), ref)
    kjt.offsets(), kjt.length_per_key()  # cached derived state must survive too
    assert_kjt_matches(pickle.loads(pickle.dumps(kjt, protocol=pickle.HIGHEST_PROTOCOL)), ref)


# ------------------------------------------------------------------------------------------------
# validation: each structural error is a ValueError whose message names the problem
# ------------------------------------------------------------------------------------------------
def assert_names(excinfo, *needles: str) -> None:
    msg = str(excinfo.value).lower()
    missing = [n for n in needles if n.lower() not in msg]
    assert not missing, f"message {msg!r} does not mention {missing}"


CONSTRUCTORS = ["lengths", "init"]


@SETTINGS
@given(ref=ref_kjts(), delta=st.integers(-3, 3).filter(bool), via=st.sampled_from(CONSTRUCTORS))
def test_lengths_not_summing_to_number_of_values(backend, ref, delta, via):
    values, lengths, weights = kjt_tensors(ref)
    n = max(0, values.numel() + delta)
    if n == values.numel():
        n += 1
    values = torch.zeros(n, dtype=ref.id_dtype)
    weights = None if weights is None else torch.zeros(n)
    with pytest.raises(ValueError) as excinfo:
        build(via, ref.keys, values, lengths, weights, ref.stride)
    assert_names(excinfo, "sum", str(int(lengths.sum())), str(n))
    build(via, ref.keys, values, lengths, weights, ref.stride, validate=False)  # hot path: no check


@SETTINGS
@given(ref=ref_kjts().filter(lambda r: len(r.keys) * r.stride >= 2), data=st.data())
def test_negative_lengths(backend, ref, data):
    values, lengths, weights = kjt_tensors(ref)
    i, j = data.draw(st.lists(st.integers(0, lengths.numel() - 1), min_size=2, max_size=2, unique=True))
    shift = int(lengths[i]) + data.draw(st.integers(1, 3))  # lengths[i] < 0, total unchanged
    lengths[i] -= shift
    lengths[j] += shift
    for via in CONSTRUCTORS:
        with pytest.raises(ValueError) as excinfo:
            build(via, ref.keys, values, lengths, weights, ref.stride)
        assert_names(excinfo, "negative")
    offsets = torch.cat([torch.zeros(1, dtype=lengths.dtype), lengths.cumsum(0)])
    with pytest.raises(ValueError) as excinfo:
        KeyedJaggedTensor.from_offsets(ref.keys, values, offsets, weights, stride=ref.stride)
    assert "negative" in str(excinfo.value) or "decrease" in str(excinfo.value), excinfo.value
    build("lengths", ref.keys, values, lengths, weights, ref.stride, validate=False)


@SETTINGS
@given(ref=ref_kjts().filter(lambda r: len(r.keys) > 0), extra=st.integers(1, 3),
       pass_stride=st.booleans(), via=st.sampled_from(CONSTRUCTORS))
def test_wrong_number_of_lengths_for_keys_times_batch(backend, ref, extra, pass_stride, via):
    values, lengths, weights = kjt_tensors(ref)
    lengths = torch.cat([lengths, torch.zeros(extra, dtype=lengths.dtype)])  # sum unchanged
    pass_stride = pass_stride or len(ref.keys) == 1  # with one key any count is a valid batch
    while not pass_stride and lengths.numel() % len(ref.keys) == 0:  # not inferable: keys x batch
        lengths = torch.cat([lengths, torch.zeros(1, dtype=lengths.dtype)])
    stride = ref.stride if pass_stride else None
    with pytest.raises(ValueError) as excinfo:
        build(via, ref.keys, values, lengths, weights, stride)
    assert_names(excinfo, "lengths", str(lengths.numel()), "keys")
    build(via, ref.keys, values, lengths, weights, stride, validate=False)


def test_lengths_without_keys_are_rejected(backend):
    with pytest.raises(ValueError) as excinfo:
        KeyedJaggedTensor.from_lengths([], torch.tensor([1]), torch.tensor([1]), stride=1)
    assert_names(excinfo, "keys", "lengths")


@SETTINGS
@given(ref=ref_kjts(), dtype=st.sampled_from([torch.float32, torch.float64, torch.bool]),
       via=st.sampled_from(CONSTRUCTORS + ["offsets"]))
def test_non_integer_ids(backend, ref, dtype, via):
    values, lengths, weights = kjt_tensors(ref)
    values = values.to(dtype)
    with pytest.raises(ValueError) as excinfo:
        if via == "offsets":
            offsets = torch.tensor(ref.flat_offsets())
            KeyedJaggedTensor.from_offsets(ref.keys, values, offsets, weights, stride=ref.stride)
        else:
            build(via, ref.keys, values, lengths, weights, ref.stride)
    assert_names(excinfo, "int", str(dtype).removeprefix("torch."))
    build("lengths", ref.keys, values, lengths, weights, ref.stride, validate=False)


@SETTINGS
@given(ref=ref_kjts(), delta=st.integers(-3, 3).filter(bool), via=st.sampled_from(CONSTRUCTORS + ["offsets"]))
def test_weights_of_the_wrong_size(backend, ref, delta, via):
    values, lengths, _ = kjt_tensors(ref)
    n = max(0, values.numel() + delta)
    if n == values.numel():
        n += 1
    weights = torch.ones(n)
    with pytest.raises(ValueError) as excinfo:
        if via == "offsets":
            offsets = torch.tensor(ref.flat_offsets())
            KeyedJaggedTensor.from_offsets(ref.keys, values, offsets, weights, stride=ref.stride)
        else:
            build(via, ref.keys, values, lengths, weights, ref.stride)
    assert_names(excinfo, "weight", str(n))
    build(via, ref.keys, values, lengths, weights, ref.stride, validate=False)


@pytest.mark.parametrize(
    "offsets,problem",
    [([1, 2, 3], "start at 0"), ([0, 2, 2], "end"), ([0, 2, 1, 3], "decrease"), ([0, 3], "bags")],
    ids=["not-from-0", "wrong-end", "decreasing", "wrong-count"],
)
def test_bad_offsets(backend, offsets, problem):
    # keys a, b with batch 1 need 3 offsets ending at 3 (the number of ids)
    with pytest.raises(ValueError) as excinfo:
        KeyedJaggedTensor.from_offsets(["a", "b"], torch.arange(3), torch.tensor(offsets), stride=1)
    assert_names(excinfo, problem)


def build(via, keys, values, lengths, weights, stride, validate=True):
    if via == "lengths":
        return KeyedJaggedTensor.from_lengths(keys, values, lengths, weights, stride=stride, validate=validate)
    return KeyedJaggedTensor(keys, values, weights=weights, lengths=lengths, stride=stride, validate=validate)


# ------------------------------------------------------------------------------------------------
# the backend switch really switches
# ------------------------------------------------------------------------------------------------
def _fbgemm_ops_called(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith("fbgemm::")}


def test_fbgemm_backend_calls_fbgemm_and_torch_backend_does_not(backend):
    ref = RefKJT(["a", "b", "c"], [[[1], [2, 3]], [[4], []], [[5, 6], [7]]], None, 2)

    def ops():
        kjt = kjt_from_ref(ref)
        kjt.offsets()
        kjt.permute([2, 0, 2])

    called = _fbgemm_ops_called(ops)
    if backend == "fbgemm":
        assert called, "use_backend('fbgemm') ran no fbgemm op for offsets() and permute()"
    else:
        assert not called, f"use_backend('torch') still ran {called}"


@SETTINGS
@edge_cases
@given(ref=ref_kjts())
def test_length_per_key_hint(backend, ref):
    """A known length_per_key may be passed in (saving a host sync); a wrong one is rejected, since
    permute trusts it (on the fbgemm path a wrong total writes out of bounds)."""
    values, lengths, weights = kjt_tensors(ref)
    hint = ref.length_per_key()
    kjt = KeyedJaggedTensor(ref.keys, values, weights, lengths=lengths, stride=ref.stride, length_per_key=hint)
    assert_kjt_matches(kjt, ref)
    assert_kjt_matches(kjt.permute(list(range(len(ref.keys)))[::-1]), ref.select(list(range(len(ref.keys)))[::-1]))
    for wrong in ([n + 1 for n in hint], hint + [0]):
        if wrong == hint:
            continue
        with pytest.raises(ValueError) as excinfo:
            KeyedJaggedTensor(ref.keys, values, weights, lengths=lengths, stride=ref.stride, length_per_key=wrong)
        assert_names(excinfo, "length_per_key")

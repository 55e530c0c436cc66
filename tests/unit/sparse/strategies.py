"""Plain-Python reference models and hypothesis strategies for the recframe.sparse tests.

The reference of a KeyedJaggedTensor is a ``RefKJT``: for every key (in order, repeats allowed so
that ``permute`` results can be described), one list per sample with that sample's ids, plus the
same nesting of weights when the KJT is weighted. Every op test builds a KJT from a reference,
applies the op, applies the same op to the lists with ordinary Python, and compares the two with
``assert_kjt_matches``, which reads the result through every public accessor.

Example counts stay small because the suite shares two CPU cores; set
``RECFRAME_HYPOTHESIS_EXAMPLES`` for a deeper run. Examples are derandomized (fixed seed).
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

MAX_EXAMPLES = int(os.environ.get("RECFRAME_HYPOTHESIS_EXAMPLES", "50"))

# The backend fixture (conftest.py) is entered once per test and is meant to stay active across
# all of that test's examples, hence the suppressed function_scoped_fixture health check.
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _fbgemm_import_error() -> str | None:
    try:
        import fbgemm_gpu  # noqa: F401
    except Exception as e:  # ImportError, or an OSError from a mismatched build
        return f"{type(e).__name__}: {e}"
    return None


FBGEMM_IMPORT_ERROR = _fbgemm_import_error()
BACKENDS = [
    pytest.param("torch", id="torch"),
    pytest.param(
        "fbgemm",
        id="fbgemm",
        marks=pytest.mark.skipif(
            FBGEMM_IMPORT_ERROR is not None,
            reason=f"fbgemm_gpu does not import ({FBGEMM_IMPORT_ERROR}); only the torch path runs",
        ),
    ),
]
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (pinned memory and streams exist only with a GPU)"
)

KEY_POOL = ("f0", "f1", "user_id", "item", "c3", "geo")  # deliberately not sorted
ID_DTYPES = (torch.int32, torch.int64)
LEN_DTYPES = (torch.int32, torch.int64)
# float32-exact values (multiples of 1/16 below 2**16), so reference and tensor floats compare with ==
weight_values = st.integers(-(2**20), 2**20).map(lambda i: i / 16)


def distinct_floats(n: int) -> st.SearchStrategy[list[float]]:
    """``n`` float32-exact values, all different: weights and dense values are payload that ops
    only move around, and distinct payload makes every misplaced or dropped value visible (hypothesis
    would otherwise often draw all zeros)."""
    return st.lists(st.integers(-(2**20), 2**20), min_size=n, max_size=n, unique=True).map(
        lambda xs: [x / 16 for x in xs]
    )


def cut(flat: list, sizes: list[int]) -> list[list]:
    """``flat`` cut into consecutive pieces of ``sizes``."""
    starts = cumsum0(sizes)
    return [flat[a:b] for a, b in zip(starts, starts[1:], strict=False)]


def cumsum0(xs: list[int]) -> list[int]:
    return [0, *itertools.accumulate(xs)]


# ------------------------------------------------------------------------------------------------
# KeyedJaggedTensor reference
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RefKJT:
    keys: list[str]
    bags: list[list[list[int]]]  # bags[k][b] = ids of key k in sample b
    wbags: list[list[list[float]]] | None  # same nesting, or None when unweighted
    stride: int
    id_dtype: torch.dtype = torch.int64
    len_dtype: torch.dtype = torch.int64

    # key-major flattening: all samples of key 0, then all samples of key 1, ...
    def flat_lengths(self) -> list[int]:
        return [len(bag) for per_key in self.bags for bag in per_key]

    def flat_offsets(self) -> list[int]:
        return cumsum0(self.flat_lengths())

    def flat_ids(self) -> list[int]:
        return [i for per_key in self.bags for bag in per_key for i in bag]

    def flat_weights(self) -> list[float] | None:
        if self.wbags is None:
            return None
        return [w for per_key in self.wbags for bag in per_key for w in bag]

    def length_per_key(self) -> list[int]:
        return [sum(len(bag) for bag in per_key) for per_key in self.bags]

    def offset_per_key(self) -> list[int]:
        return cumsum0(self.length_per_key())

    def select(self, indices: list[int]) -> RefKJT:
        """The reference of keys ``indices`` (any order, repeats and drops allowed)."""
        return dataclasses.replace(
            self,
            keys=[self.keys[i] for i in indices],
            bags=[self.bags[i] for i in indices],
            wbags=None if self.wbags is None else [self.wbags[i] for i in indices],
        )


@st.composite
def ref_kjts(
    draw,
    max_keys: int = 5,
    max_batch: int = 6,
    max_bag: int = 4,
    keys: list[str] | None = None,
    stride: int | None = None,
    weighted: bool | None = None,
    id_dtype: torch.dtype | None = None,
) -> RefKJT:
    """A random KJT reference: keys 0..max_keys, batch 0..max_batch, bags of 0..max_bag ids."""
    if keys is None:
        keys = draw(st.lists(st.sampled_from(KEY_POOL), unique=True, max_size=max_keys))
    if stride is None:
        stride = draw(st.integers(0, max_batch))
    if weighted is None:
        weighted = draw(st.booleans())
    if id_dtype is None:
        id_dtype = draw(st.sampled_from(ID_DTYPES))
    len_dtype = draw(st.sampled_from(LEN_DTYPES))
    # int64 ids go past 2**31 so that a silent cast to int32 shows
    id_max = 2**31 - 1 if id_dtype == torch.int32 else 2**62
    # a key's samples are drawn together, so "this key has no ids at all" comes up often
    bag_size = st.integers(0, max_bag)
    sizes = [
        [0] * stride
        if draw(st.sampled_from([True, False, False, False]))  # this key has no ids at all
        else draw(st.lists(bag_size, min_size=stride, max_size=stride))
        for _ in keys
    ]
    # half the time all ids differ, so that any id moved to the wrong place shows
    total = sum(map(sum, sizes))
    flat_ids = draw(st.lists(st.integers(0, id_max), min_size=total, max_size=total, unique=draw(st.booleans())))
    per_key = cut(flat_ids, [sum(s) for s in sizes])
    bags = [cut(ids, s) for ids, s in zip(per_key, sizes, strict=True)]
    wbags = None
    if weighted:
        flat = draw(distinct_floats(sum(map(sum, sizes))))
        per_key = cut(flat, [sum(s) for s in sizes])
        wbags = [cut(w, s) for w, s in zip(per_key, sizes, strict=True)]
    return RefKJT(list(keys), bags, wbags, stride, id_dtype, len_dtype)


def kjt_tensors(ref: RefKJT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    values = torch.tensor(ref.flat_ids(), dtype=ref.id_dtype)
    lengths = torch.tensor(ref.flat_lengths(), dtype=ref.len_dtype)
    fw = ref.flat_weights()
    weights = None if fw is None else torch.tensor(fw, dtype=torch.float32)
    return values, lengths, weights


def kjt_from_ref(ref: RefKJT, via: str = "lengths", validate: bool = True):
    from recframe.sparse import KeyedJaggedTensor

    values, lengths, weights = kjt_tensors(ref)
    if via == "lengths":
        return KeyedJaggedTensor.from_lengths(
            ref.keys, values, lengths, weights=weights, stride=ref.stride, validate=validate
        )
    if via == "offsets":
        offsets = torch.tensor(ref.flat_offsets(), dtype=ref.len_dtype)
        return KeyedJaggedTensor.from_offsets(
            ref.keys, values, offsets, weights=weights, stride=ref.stride, validate=validate
        )
    if via == "init":
        return KeyedJaggedTensor(
            ref.keys, values, weights=weights, lengths=lengths, stride=ref.stride, validate=validate
        )
    raise AssertionError(via)


def assert_kjt_matches(kjt, ref: RefKJT, *, check_id_dtype: bool = True) -> None:
    """Reads ``kjt`` through every accessor and compares it with the reference lists."""
    from recframe.sparse import KeyedJaggedTensor

    assert isinstance(kjt, KeyedJaggedTensor), type(kjt)
    assert list(kjt.keys()) == ref.keys
    assert kjt.stride() == ref.stride
    values, lengths, offsets = kjt.values(), kjt.lengths(), kjt.offsets()
    assert values.dim() == 1 and lengths.dim() == 1 and offsets.dim() == 1
    if check_id_dtype:
        assert values.dtype == ref.id_dtype
    assert not lengths.is_floating_point() and not offsets.is_floating_point()
    assert lengths.tolist() == ref.flat_lengths()
    assert offsets.tolist() == ref.flat_offsets()
    assert values.tolist() == ref.flat_ids()
    assert kjt.length_per_key() == ref.length_per_key()
    assert kjt.offset_per_key() == ref.offset_per_key()
    weights = kjt.weights_or_none()
    if ref.wbags is None:
        assert weights is None
    else:
        assert weights is not None and weights.is_floating_point()
        assert weights.tolist() == ref.flat_weights()
        assert kjt.weights().tolist() == ref.flat_weights()


# ------------------------------------------------------------------------------------------------
# JaggedTensor reference: one list per row
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RefJT:
    rows: list[list]  # ints for integer dtypes, float32-exact floats for float32
    wrows: list[list[float]] | None
    dtype: torch.dtype

    def lengths(self) -> list[int]:
        return [len(r) for r in self.rows]

    def flat(self) -> list:
        return [x for r in self.rows for x in r]


@st.composite
def ref_jts(draw, max_rows: int = 6, max_len: int = 5) -> RefJT:
    dtype = draw(st.sampled_from((torch.int32, torch.int64, torch.float32)))
    sizes = draw(st.lists(st.integers(0, max_len), max_size=max_rows))
    if dtype == torch.float32:
        rows = cut(draw(distinct_floats(sum(sizes))), sizes)
    else:
        bound = 2**31 - 1 if dtype == torch.int32 else 2**62
        rows = [draw(st.lists(st.integers(-bound, bound), min_size=n, max_size=n)) for n in sizes]
    wrows = None
    if draw(st.booleans()):
        wrows = cut(draw(distinct_floats(sum(sizes))), sizes)
    return RefJT(rows, wrows, dtype)


def jt_from_ref(ref: RefJT, via: str = "lengths"):
    from recframe.sparse import JaggedTensor

    values = torch.tensor(ref.flat(), dtype=ref.dtype)
    weights = None
    if ref.wrows is not None:
        weights = torch.tensor([w for r in ref.wrows for w in r], dtype=torch.float32)
    if via == "lengths":
        return JaggedTensor(values, lengths=torch.tensor(ref.lengths(), dtype=torch.int64), weights=weights)
    return JaggedTensor(values, offsets=torch.tensor(cumsum0(ref.lengths()), dtype=torch.int64), weights=weights)


def assert_jt_matches(jt, rows: list[list], wrows: list[list[float]] | None, dtype: torch.dtype | None) -> None:
    from recframe.sparse import JaggedTensor

    assert isinstance(jt, JaggedTensor), type(jt)
    lengths = [len(r) for r in rows]
    if dtype is not None:
        assert jt.values().dtype == dtype
    assert jt.lengths().tolist() == lengths
    assert jt.offsets().tolist() == cumsum0(lengths)
    assert jt.values().tolist() == [x for r in rows for x in r]
    dense = jt.to_dense()
    assert len(dense) == len(rows)
    assert [t.tolist() for t in dense] == rows
    if wrows is None:
        assert jt.weights_or_none() is None
    else:
        assert jt.weights().tolist() == [w for r in wrows for w in r]


# ------------------------------------------------------------------------------------------------
# KeyedTensor reference: per key, a [B][dim] list of rows
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RefKT:
    keys: list[str]
    dims: list[int]
    cols: list[list[list[float]]]  # cols[k][b] = the dims[k] values of key k in sample b
    batch: int

    def rows(self) -> list[list[float]]:
        return [[x for k in range(len(self.keys)) for x in self.cols[k][b]] for b in range(self.batch)]

    def values(self) -> torch.Tensor:
        return torch.tensor(self.rows(), dtype=torch.float32).reshape(self.batch, sum(self.dims))


@st.composite
def ref_kts(draw, keys: list[str] | None = None, batch: int | None = None, max_keys: int = 5) -> RefKT:
    if keys is None:
        keys = draw(st.lists(st.sampled_from(KEY_POOL), unique=True, min_size=1, max_size=max_keys))
    if batch is None:
        batch = draw(st.integers(0, 6))
    dims = draw(st.lists(st.integers(1, 4), min_size=len(keys), max_size=len(keys)))
    flat = draw(distinct_floats(batch * sum(dims)))
    per_key = cut(flat, [batch * d for d in dims])
    cols = [cut(block, [d] * batch) for block, d in zip(per_key, dims, strict=True)]
    return RefKT(list(keys), dims, cols, batch)


def kt_from_ref(ref: RefKT):
    from recframe.sparse import KeyedTensor

    return KeyedTensor(ref.keys, ref.dims, ref.values())

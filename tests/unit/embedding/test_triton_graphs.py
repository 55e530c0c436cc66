"""The triton backward's CUDA-graph policy (``kernels/triton_graphs.py``) on CPU, with a stand-in for the capture.

Which shapes get an entry, who may write an entry's buffers, when a backward replays, runs eagerly
or raises, and when graphs are dropped. The graphs themselves (capture and replay on a GPU, equal
to the eager path bit for bit) are tested in ``tests/gpu/test_triton_gpu.py``; the kernels'
``INDIRECT`` inputs on Triton's interpreter in ``test_triton.py``.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import pickle

import pytest
import torch

from recframe.embedding.kernels import triton_graphs
from recframe.embedding.kernels.triton_graphs import MAX_GRAPHS, MAX_LOOKUPS, BackwardGraphs, Entry


class FakeGraph:
    """Stands for a captured CUDA graph: replay runs the captured launches."""

    def __init__(self, launch) -> None:  # noqa: ANN001
        self.launch = launch
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.launch()


@pytest.fixture
def graphs(monkeypatch: pytest.MonkeyPatch) -> BackwardGraphs:
    monkeypatch.setattr(BackwardGraphs, "_capture", lambda self, launch, device: FakeGraph(launch))
    return BackwardGraphs(enabled=True)


def new_entry(num_lookups: int, weighted: bool, grad_dtype: torch.dtype) -> Entry:
    rows = torch.empty(num_lookups, dtype=torch.int32)
    return Entry(keys=rows, grad_rows=rows.clone(), grad_at=torch.zeros(1, dtype=torch.int64),
                 weights_at=torch.zeros(1, dtype=torch.int64) if weighted else None, grad_dtype=grad_dtype)


FP = (1, 2, 0.01)  # a kernel's fingerprint: storage addresses and optimizer settings


def claim(graphs: BackwardGraphs, size: int, weighted: bool = False, fingerprint: tuple = FP,  # noqa: ANN201
          grad_dtype: torch.dtype = torch.float32):
    return graphs.claim(size, weighted, fingerprint, new_entry, grad_dtype)


def run(graphs: BackwardGraphs, handed, grad=None, weights=None, fingerprint: tuple = FP,  # noqa: ANN001
        launch=lambda: None) -> bool:  # noqa: ANN001
    return graphs.run(handed, torch.zeros(4, 8) if grad is None else grad, weights, fingerprint, launch)


def test_a_shape_trained_twice_in_a_row_gets_an_entry(graphs: BackwardGraphs) -> None:
    assert claim(graphs, 100) is None  # first time: eager
    handed = claim(graphs, 100)
    assert handed is not None and handed.entry.keys.numel() == 100
    assert claim(graphs, 100, weighted=True) is None  # weighted is another shape, seen once


def test_shapes_that_do_not_repeat_in_a_row_stay_eager(graphs: BackwardGraphs) -> None:
    """Bags of random sizes hit the same total now and then: that must not take a graph slot."""
    for size in [5, 6, 5, 6, 7, 5, 7, 6]:
        assert claim(graphs, size) is None
    assert not graphs._entries


def test_disabled_empty_and_huge_shapes_never_claim(graphs: BackwardGraphs) -> None:
    off = BackwardGraphs(enabled=False)
    for _ in range(3):
        assert off.claim(100, False, FP, new_entry) is None
        assert claim(graphs, 0) is None
        assert claim(graphs, MAX_LOOKUPS + 1) is None


def test_at_most_max_graphs_shapes(graphs: BackwardGraphs) -> None:
    claimed = []
    for size in range(1, MAX_GRAPHS + 3):
        claim(graphs, size)
        claimed.append(claim(graphs, size) is not None)
    assert claimed == [True] * MAX_GRAPHS + [False, False]


def test_first_backward_runs_eagerly_and_captures_later_ones_replay(graphs: BackwardGraphs) -> None:
    claim(graphs, 4, weighted=True)
    runs = []
    grads, weights = [torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(4, 8)], [torch.ones(4), torch.ones(4) * 2]
    for step in range(3):
        handed = claim(graphs, 4, weighted=True)
        grad, weight = grads[step], weights[step // 2]  # new addresses at steps 1 and 2, each written for the replay
        assert run(graphs, handed, grad, weight, launch=lambda step=step: runs.append(step))
        entry = handed.entry
        assert int(entry.grad_at) == grad.data_ptr() and int(entry.weights_at) == weight.data_ptr()
    assert runs == [0, 0, 0]  # step 0 ran its launches; steps 1 and 2 replayed what step 0 captured
    assert entry.graph.replays == 2


def test_a_claimed_entry_is_not_handed_out_again_until_backward_or_release(graphs: BackwardGraphs) -> None:
    claim(graphs, 4)
    first = claim(graphs, 4)
    assert claim(graphs, 4) is None  # a second forward before the first backward: eager
    assert run(graphs, first)
    second = claim(graphs, 4)
    assert second is not None and second.entry is first.entry
    del second  # a forward whose autograd graph was freed without a backward
    gc.collect()
    assert claim(graphs, 4) is not None


def test_backward_after_the_buffers_were_claimed_again_raises(graphs: BackwardGraphs) -> None:
    claim(graphs, 4)
    first = claim(graphs, 4)
    assert run(graphs, first)
    assert run(graphs, first)  # retained graph, nothing in between
    later = claim(graphs, 4)
    assert later is not None
    with pytest.raises(RuntimeError, match="overwritten by a later forward"):
        run(graphs, first)


def test_a_new_fingerprint_drops_every_graph_before_the_forward_writes(graphs: BackwardGraphs) -> None:
    """Moved storage (module.to, a new tensor) or a new lr: the graphs baked the old ones in."""
    for size in (4, 5):
        claim(graphs, size)
        assert run(graphs, claim(graphs, size))
    old = graphs._entries[(4, False, torch.float32)]
    assert claim(graphs, 4, fingerprint=(7, 2, 0.01)) is None  # eager, and the old buffers are not handed out
    assert old.dropped and old.graph is None and not graphs._entries
    assert claim(graphs, 5, fingerprint=(7, 2, 0.01)) is None  # shapes are counted anew
    assert claim(graphs, 5, fingerprint=(7, 2, 0.01)) is not None


def test_a_fingerprint_changed_between_forward_and_backward_runs_eagerly(graphs: BackwardGraphs) -> None:
    claim(graphs, 4)
    assert run(graphs, claim(graphs, 4))
    handed = claim(graphs, 4)
    assert not run(graphs, handed, fingerprint=(1, 2, 0.02))  # lr changed after the forward
    assert handed.entry.dropped


def test_graphs_are_kept_per_gradient_dtype(graphs: BackwardGraphs) -> None:
    """A graph captured for an fp32 gradient never replays on a bf16 one (the kernels load the gradient in the
    dtype they were captured for), nor the other way round."""
    claim(graphs, 4)
    fp32 = claim(graphs, 4)
    assert fp32 is not None and fp32.entry.grad_dtype == torch.float32
    assert run(graphs, fp32, grad=torch.zeros(4, 8))
    assert claim(graphs, 4, grad_dtype=torch.bfloat16) is None  # another shape, seen once: eager
    bf16 = claim(graphs, 4, grad_dtype=torch.bfloat16)
    assert bf16 is not None and bf16.entry is not fp32.entry and bf16.entry.grad_dtype == torch.bfloat16
    launched = []
    assert run(graphs, bf16, grad=torch.zeros(4, 8, dtype=torch.bfloat16), launch=lambda: launched.append(1))
    assert launched == [1]
    claim(graphs, 4)
    again = claim(graphs, 4)
    assert again.entry is fp32.entry
    assert not run(graphs, again, grad=torch.zeros(4, 8, dtype=torch.bfloat16))  # wrong dtype: eager, no replay
    assert fp32.entry.graph.replays == 0


def test_a_misaligned_gradient_runs_eagerly(graphs: BackwardGraphs) -> None:
    claim(graphs, 4)
    assert not run(graphs, claim(graphs, 4), grad=torch.zeros(33)[1:])  # 4 bytes past a 16-byte boundary


def test_nothing_is_claimed_inside_a_callers_capture(graphs: BackwardGraphs, monkeypatch: pytest.MonkeyPatch) -> None:
    claim(graphs, 4)
    assert run(graphs, claim(graphs, 4))
    monkeypatch.setattr(triton_graphs, "_capturing", lambda: True)
    assert claim(graphs, 4) is None  # the caller's graph records eager launches on fresh buffers


def test_copies_start_without_graphs(graphs: BackwardGraphs) -> None:
    claim(graphs, 4)
    assert run(graphs, claim(graphs, 4))
    for copied in (copy.deepcopy(graphs), pickle.loads(pickle.dumps(graphs))):
        assert copied.enabled and not copied._entries


class RecordingGraph:
    """A CUDAGraph stand-in whose capture records the calls."""

    calls: list[str] = []

    def capture_begin(self, pool=None, capture_error_mode: str = "global") -> None:  # noqa: ANN001
        RecordingGraph.calls.append(f"begin {capture_error_mode}")

    def capture_end(self) -> None:
        RecordingGraph.calls.append("end")


def fake_cuda(monkeypatch: pytest.MonkeyPatch, graph_class: type) -> None:
    cuda = triton_graphs.torch.cuda
    monkeypatch.setattr(cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(cuda, "Stream", lambda device=None: "side stream")
    monkeypatch.setattr(cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "CUDAGraph", graph_class)


def test_a_launch_failing_inside_the_capture_ends_it_and_turns_graphs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, RecordingGraph)
    RecordingGraph.calls = []
    graphs = BackwardGraphs(enabled=True)
    claim(graphs, 4)
    runs = []

    def launch() -> None:
        runs.append(1)
        if len(runs) == 2:  # the eager run passes, the captured one fails
            raise RuntimeError("operation not permitted when stream is capturing")

    assert run(graphs, claim(graphs, 4), launch=launch)
    assert runs == [1, 1]  # the step's update ran once, eagerly, before the capture was tried
    assert RecordingGraph.calls == ["begin thread_local", "end"]  # the capture was ended
    assert not graphs.enabled and not graphs._entries
    assert claim(graphs, 4) is None


def test_a_capture_failing_to_begin_is_still_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """capture_begin can fail half-way (after the RNG entered capture mode): capture_end must still run."""

    class FailsToBegin(RecordingGraph):
        def capture_begin(self, pool=None, capture_error_mode: str = "global") -> None:  # noqa: ANN001
            RecordingGraph.calls.append("begin")
            raise RuntimeError("INTERNAL ASSERT FAILED")

    fake_cuda(monkeypatch, FailsToBegin)
    RecordingGraph.calls = []
    graphs = BackwardGraphs(enabled=True)
    claim(graphs, 4)
    assert run(graphs, claim(graphs, 4))
    assert RecordingGraph.calls == ["begin", "end"] and not graphs.enabled


def test_failed_capture_turns_graphs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            raise RuntimeError("no capture here")

    fake_cuda(monkeypatch, Broken)
    graphs = BackwardGraphs(enabled=True)
    claim(graphs, 4)
    runs = []
    assert run(graphs, claim(graphs, 4), launch=lambda: runs.append(1))
    assert runs == [1]  # the step's update ran eagerly before the capture was tried
    assert not graphs.enabled
    assert claim(graphs, 4) is None


def test_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECFRAME_CUDA_GRAPHS", "0")
    assert not triton_graphs.graphs_allowed()
    monkeypatch.delenv("RECFRAME_CUDA_GRAPHS")
    assert triton_graphs.graphs_allowed()

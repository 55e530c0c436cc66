"""The triton backward's CUDA-graph policy (``kernels/triton_graphs.py``) on CPU, with a stand-in for the capture.

Which shapes get an entry, who may write an entry's buffers, when a backward replays, runs eagerly
or raises, and when graphs are dropped. The graphs themselves (capture and replay on a GPU, equal
to the eager path bit for bit) are tested in ``tests/gpu/test_triton_gpu.py``; the kernels'
``INDIRECT`` inputs on Triton's interpreter in ``test_triton.py``.
"""

from __future__ import annotations

import gc

import pytest
import torch

from recframe.embedding.kernels import triton_graphs
from recframe.embedding.kernels.triton_graphs import CAPTURE_AFTER, MAX_GRAPHS, MAX_LOOKUPS, BackwardGraphs, Entry


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
    monkeypatch.setattr(BackwardGraphs, "_capture", lambda self, launch: FakeGraph(launch))
    return BackwardGraphs(enabled=True)


def new_entry(num_lookups: int, weighted: bool) -> Entry:
    rows = torch.empty(num_lookups, dtype=torch.int32)
    return Entry(keys=rows, grad_rows=rows.clone(), grad_at=torch.zeros(1, dtype=torch.int64),
                 weights_at=torch.zeros(1, dtype=torch.int64) if weighted else None)


def test_a_shape_gets_an_entry_the_second_time_it_is_trained(graphs: BackwardGraphs) -> None:
    assert CAPTURE_AFTER == 2
    assert graphs.claim(100, False, new_entry) is None  # first time: eager
    claim = graphs.claim(100, False, new_entry)
    assert claim is not None and claim.entry.keys.numel() == 100
    assert graphs.claim(100, True, new_entry) is None  # weighted is another shape, seen once


def test_disabled_empty_and_huge_shapes_never_claim(graphs: BackwardGraphs) -> None:
    off = BackwardGraphs(enabled=False)
    for _ in range(3):
        assert off.claim(100, False, new_entry) is None
        assert graphs.claim(0, False, new_entry) is None
        assert graphs.claim(MAX_LOOKUPS + 1, False, new_entry) is None


def test_at_most_max_graphs_shapes(graphs: BackwardGraphs) -> None:
    claimed = []
    for size in range(1, MAX_GRAPHS + 3):
        graphs.claim(size, False, new_entry)
        claimed.append(graphs.claim(size, False, new_entry) is not None)
    assert claimed == [True] * MAX_GRAPHS + [False, False]


def test_first_backward_runs_eagerly_and_captures_later_ones_replay(graphs: BackwardGraphs) -> None:
    graphs.claim(4, True, new_entry)
    runs = []
    grads, weights = [torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(4, 8)], [torch.ones(4), torch.ones(4) * 2]
    for step in range(3):
        claim = graphs.claim(4, True, new_entry)
        grad, weight = grads[step], weights[step // 2]  # new addresses at steps 1 and 2, each written for the replay
        assert graphs.run(claim, grad, weight, (1, 2), lambda step=step: runs.append(step))
        entry = claim.entry
        assert int(entry.grad_at) == grad.data_ptr() and int(entry.weights_at) == weight.data_ptr()
    assert runs == [0, 0, 0]  # step 0 ran its launches; steps 1 and 2 replayed what step 0 captured
    assert entry.graph.replays == 2


def test_a_claimed_entry_is_not_handed_out_again_until_backward_or_release(graphs: BackwardGraphs) -> None:
    graphs.claim(4, False, new_entry)
    first = graphs.claim(4, False, new_entry)
    assert graphs.claim(4, False, new_entry) is None  # a second forward before the first backward: eager
    assert graphs.run(first, torch.zeros(4, 8), None, (1,), lambda: None)
    second = graphs.claim(4, False, new_entry)
    assert second is not None and second.entry is first.entry
    del second  # a forward whose autograd graph was freed without a backward
    gc.collect()
    assert graphs.claim(4, False, new_entry) is not None


def test_backward_after_the_buffers_were_claimed_again_raises(graphs: BackwardGraphs) -> None:
    graphs.claim(4, False, new_entry)
    first = graphs.claim(4, False, new_entry)
    assert graphs.run(first, torch.zeros(4, 8), None, (1,), lambda: None)
    assert graphs.run(first, torch.zeros(4, 8), None, (1,), lambda: None)  # retained graph, nothing in between
    later = graphs.claim(4, False, new_entry)
    assert later is not None
    with pytest.raises(RuntimeError, match="overwritten by a later forward"):
        graphs.run(first, torch.zeros(4, 8), None, (1,), lambda: None)


def test_moved_storage_drops_every_graph(graphs: BackwardGraphs) -> None:
    for size in (4, 5):
        graphs.claim(size, False, new_entry)
        assert graphs.run(graphs.claim(size, False, new_entry), torch.zeros(size, 8), None, (1,), lambda: None)
    claim = graphs.claim(4, False, new_entry)
    assert not graphs.run(claim, torch.zeros(4, 8), None, (7,), lambda: None)  # eager: the weight moved
    assert claim.entry.dropped and claim.entry.graph is None
    assert graphs.claim(5, False, new_entry) is None  # shapes are counted anew
    assert graphs.claim(5, False, new_entry) is not None


def test_a_misaligned_gradient_runs_eagerly(graphs: BackwardGraphs) -> None:
    graphs.claim(4, False, new_entry)
    claim = graphs.claim(4, False, new_entry)
    grad = torch.zeros(33)[1:]  # 4 bytes past a 16-byte boundary
    assert not graphs.run(claim, grad, None, (1,), lambda: None)


def test_failed_capture_turns_graphs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    graphs = BackwardGraphs(enabled=True)

    class Broken:
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            raise RuntimeError("no capture here")

    monkeypatch.setattr(triton_graphs.torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(triton_graphs.torch.cuda, "CUDAGraph", Broken)
    graphs.claim(4, False, new_entry)
    runs = []
    assert graphs.run(graphs.claim(4, False, new_entry), torch.zeros(4, 8), None, (1,), lambda: runs.append(1))
    assert runs == [1]  # the step's update ran eagerly before the capture was tried
    assert not graphs.enabled
    assert graphs.claim(4, False, new_entry) is None


def test_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECFRAME_CUDA_GRAPHS", "0")
    assert not triton_graphs.graphs_allowed()
    monkeypatch.delenv("RECFRAME_CUDA_GRAPHS")
    assert triton_graphs.graphs_allowed()

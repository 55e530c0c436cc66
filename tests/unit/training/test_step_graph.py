"""trainer.cuda_graph on the CPU side: what rules a step graph out, the module's choice, Batch layouts and copies,
and optim.gradient_clip_val (the graphed step's replays themselves are tested in tests/gpu/test_step_graph.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recframe.config.compose import compose_config
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.training.builders import build_model, build_objective
from recframe.training.module import RecModule
from recframe.training.step_graph import graph_blockers
from recframe.vocab import CudaGraph

CUDA = torch.device("cuda")


def collection(optimizer: str, backend: str) -> EmbeddingBagCollection:
    tables = [TableConfig(name=f"t{i}", num_embeddings=10, embedding_dim=4, feature_names=[f"f{i}"]) for i in range(5)]
    return EmbeddingBagCollection(tables, SparseOptimizer(name=optimizer), backend=backend, device="cpu")


def test_nothing_rules_out_a_one_gpu_step_with_replayable_kernels() -> None:
    model = nn.Sequential(collection("rowwise_adagrad", "torch"))
    assert graph_blockers(model, CUDA, 1, "32-true") == []
    assert graph_blockers(model, CUDA, 1, "bf16-mixed") == []


def test_each_blocker_is_named() -> None:
    model = nn.Sequential(collection("adam", "torch"))
    reasons = graph_blockers(model, torch.device("cpu"), 2, "16-mixed")
    assert len(reasons) == 4
    assert "not on a CUDA GPU" in reasons[0] and "2 processes" in reasons[1] and "16-mixed" in reasons[2]
    assert "t0, t1, t2 and 2 more" in reasons[3] and "step count" in reasons[3]


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad", "adam", "rowwise_adam", "lamb"])
def test_stacked_kernels_are_replayable_without_a_step_count(optimizer: str) -> None:
    unsafe = collection(optimizer, "torch").graph_unsafe_tables()
    assert unsafe == ([] if optimizer in ("sgd", "adagrad", "rowwise_adagrad") else [f"t{i}" for i in range(5)])


class _FakeTrainer:
    """What RecModule._graphed_step reads of a trainer."""

    def __init__(self, device: str, world_size: int = 1, precision: str = "32-true") -> None:
        self.strategy = type("S", (), {"root_device": torch.device(device)})()
        self.world_size, self.precision = world_size, precision


def module(cuda_graph: str) -> RecModule:
    cfg = compose_config(["+experiment=dlrm", "tables.num_embeddings=100", "tables.backend=torch", "run_dir=unused"])
    out = RecModule(build_model=lambda: build_model(cfg), objective=build_objective(cfg), optim=cfg.optim,
                    cuda_graph=cuda_graph)
    out._trainer = _FakeTrainer("cpu")  # type: ignore[assignment]
    return out


def test_auto_on_the_cpu_keeps_lightnings_automatic_step() -> None:
    m = module("auto")
    m.configure_model()
    assert m.graphed_step is None and m.automatic_optimization


def test_on_where_a_graph_is_ruled_out_is_an_error_naming_why() -> None:
    m = module("on")
    with pytest.raises(ValueError, match=r"trainer.cuda_graph=on.*not on a CUDA GPU.*trainer.cuda_graph=auto"):
        m.configure_model()


def test_off_builds_no_graph() -> None:
    m = module(CudaGraph.off)
    m.configure_model()
    assert m.graphed_step is None and m.automatic_optimization


def _batch(ids: list[int], dense: float) -> Batch:
    kjt = KeyedJaggedTensor.from_lengths(["a", "b"], torch.tensor(ids), torch.tensor([1, len(ids) - 1]),
                                         weights=torch.ones(len(ids)))
    return Batch(torch.full((1, 3), dense), kjt, torch.tensor([1.0]))


def test_batch_layout_copy_and_clone() -> None:
    a, b = _batch([1, 2, 3], 0.0), _batch([7, 8, 9], 5.0)
    assert a.layout() == b.layout()
    assert a.layout() != _batch([1, 2], 0.0).layout()  # another number of ids
    copy = a.clone()
    a.copy_(b)
    assert a.sparse_features.values().tolist() == [7, 8, 9] and a.dense_features[0, 0] == 5.0
    assert copy.sparse_features.values().tolist() == [1, 2, 3] and copy.dense_features[0, 0] == 0.0
    assert copy.sparse_features.values().data_ptr() != a.sparse_features.values().data_ptr()


def test_gradient_clip_val_clips_the_dense_gradient_norm() -> None:
    m = module("off")
    m.optim.gradient_clip_val = 0.5
    layer = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.full((2, 4), 100.0)).sum().backward()
    before = torch.nn.utils.get_total_norm([p.grad for p in layer.parameters()])
    m.on_before_optimizer_step(optimizer)
    after = torch.nn.utils.get_total_norm([p.grad for p in layer.parameters()])
    assert before > 1.0 and after == pytest.approx(0.5, rel=1e-4)

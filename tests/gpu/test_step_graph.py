"""The training step as one CUDA graph (recframe.training.step_graph): the eager step's numbers, fallbacks, CLI."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from recframe.config.compose import compose_config
from recframe.sparse import Batch
from recframe.training.builders import build_datamodule, build_model
from recframe.training.module import dense_parameters
from recframe.training.objectives import training_loss
from recframe.training.step_graph import GraphedStep, graph_blockers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from integration.helpers import TINY, run_recframe, scalars  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def _batches(batch_size: int, count: int) -> list[Batch]:
    cfg = compose_config(["+experiment=dlrm", *TINY, f"data.batch_size={batch_size}", "run_dir=unused"])
    datamodule = build_datamodule(cfg)
    datamodule.device = CUDA
    loader = iter(datamodule.train_dataloader())
    return [datamodule.materialize(next(loader), CUDA) for _ in range(count)]


def test_graphed_steps_equal_eager_steps_with_a_fallback_and_a_recapture() -> None:
    """Replays, an eager step of another batch size in between, and a table whose storage moved: the losses and
    every weight stay those of plain eager steps."""
    cfg = compose_config(["+experiment=dlrm", *TINY, "run_dir=unused"])
    torch.manual_seed(0)
    with CUDA:
        eager_model = build_model(cfg)
    graphed_model = copy.deepcopy(eager_model)
    assert graph_blockers(graphed_model, CUDA, 1, "32-true") == []
    big, small = _batches(64, 12), _batches(32, 1)
    batches = big[:6] + small + big[6:]


    def move_first_table(i: int) -> None:
        if i == 9:  # a new storage for the first table group: the graph must be dropped and captured again
            for model in (eager_model, graphed_model):
                kernel = model.embeddings.kernels[0]
                kernel.weight = kernel.weight.clone()

    step = _graphed_equals_eager(eager_model, graphed_model, batches, momentum=0.9, before_step=move_first_table)
    assert step.captures == 2  # steps 2 and 11 (after 2 eager steps each time)
    assert step.eager_steps == 2 + 1 + 2  # warmup, the small batch, warmup after the move


def _graphed_equals_eager(eager_model: torch.nn.Module, graphed_model: torch.nn.Module, batches: list[Batch],
                          momentum: float = 0.0, before_step=None) -> GraphedStep:  # noqa: ANN001 (a callback)
    """Train both models on ``batches`` with SGD, one eagerly and one through a GraphedStep (2 warmup steps); assert
    equal losses and weights; return the GraphedStep."""
    eager_opt, graphed_opt = (torch.optim.SGD(dense_parameters(m), lr=0.05, momentum=momentum)
                              for m in (eager_model, graphed_model))
    step = GraphedStep(lambda b: training_loss(graphed_model, b), dense_parameters(graphed_model), graphed_model,
                       warmup_steps=2)
    eager_losses, graphed_losses = [], []
    for i, batch in enumerate(batches):
        if before_step is not None:
            before_step(i)
        eager_opt.zero_grad(set_to_none=True)
        loss, _ = training_loss(eager_model, batch)
        loss.backward()
        eager_opt.step()
        eager_losses.append(loss.item())
        total, _ = step(batch)
        graphed_losses.append(total.item())
        graphed_opt.step()
    torch.testing.assert_close(graphed_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for (name, want), got in zip(eager_model.state_dict().items(), graphed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    return step


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_recframe_train_with_a_cuda_graph_equals_eager(tmp_path: Path, precision: str) -> None:
    losses, auc = {}, {}
    for mode in ("on", "off"):
        run_dir = tmp_path / mode
        done = run_recframe("train", "+experiment=dlrm", *TINY, "trainer.accelerator=gpu",
                            f"trainer.precision={precision}", "trainer.max_steps=20", "trainer.val_check_interval=10",
                            f"trainer.cuda_graph={mode}", "optim.gradient_clip_val=1.0", f"hydra.run.dir={run_dir}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert ("one CUDA graph" in done.stdout + done.stderr) == (mode == "on"), done.stdout[-3000:]
        losses[mode] = [v for _, v in scalars(run_dir)["train/loss"]]
        auc[mode] = json.loads((run_dir / "metrics.json").read_text())["val/auc"]
    assert len(losses["on"]) == 20
    torch.testing.assert_close(losses["on"], losses["off"], rtol=1e-4, atol=1e-6)
    assert auc["on"] == pytest.approx(auc["off"], abs=1e-4)


@pytest.mark.parametrize("experiment", ["dlrm", "mlperf_dcnv2"])
def test_compiled_dense_towers_inside_the_graph_equal_the_compiled_eager_step(experiment: str) -> None:
    """trainer.compile_dense=true with the step graph: the compiled towers' kernels are captured and replayed, and
    the losses and weights are those of the same compiled model stepped eagerly."""
    from recframe.training.module import compile_dense_modules

    shape = ["model.bottom_mlp=[32,16]", "model.top_mlp=[32,16]", "model.dcn_low_rank_dim=8"] \
        if experiment == "mlperf_dcnv2" else []
    cfg = compose_config([f"+experiment={experiment}", *TINY, *shape, "run_dir=unused"])
    torch.manual_seed(0)
    with CUDA:
        eager_model = build_model(cfg)
    graphed_model = copy.deepcopy(eager_model)
    for model in (eager_model, graphed_model):
        assert compile_dense_modules(model)
    datamodule = build_datamodule(cfg)
    datamodule.device = CUDA
    loader = iter(datamodule.train_dataloader())
    batches = [datamodule.materialize(next(loader), CUDA) for _ in range(8)]
    step = _graphed_equals_eager(eager_model, graphed_model, batches)
    assert step.enabled and step.captures == 1, "the compiled step was not captured (see the log's warning)"

"""trainer.compile_dense: the dense parts of a model are compiled in place, the embedding collections are not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recframe.config.compose import compose_config
from recframe.training.builders import build_model
from recframe.training.module import compile_dense_modules


def test_every_child_but_the_embeddings_is_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    model = build_model(compose_config(["+experiment=dlrm", "tables.num_embeddings=100", "run_dir=unused"]))
    names = compile_dense_modules(model)
    assert names == ["dense_arch", "interaction", "over_arch", "head"]
    assert compiled == [model.dense_arch, model.interaction, model.over_arch, model.head]


@pytest.mark.slow
def test_a_compiled_model_trains_like_the_eager_one() -> None:
    """Inductor on CPU: about a minute of compilation."""
    cfg = compose_config(["+experiment=dlrm", "tables.num_embeddings=100", "tables.embedding_dim=8", "run_dir=x",
                          "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.backend=torch"])
    from recframe.training.builders import build_datamodule
    from recframe.training.objectives import training_loss

    batches = [build_datamodule(cfg).generator.batch(i, 32) for i in range(3)]
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        if compiled:
            compile_dense_modules(model)
        optimizer = torch.optim.SGD([p for n, p in model.named_parameters() if "embeddings" not in n], lr=0.1)
        losses[compiled] = []
        for batch in batches:
            loss, _ = training_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[compiled].append(float(loss))
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-6)
    assert model.dense_arch._compiled_call_impl is not None  # (the last model built is the compiled one)

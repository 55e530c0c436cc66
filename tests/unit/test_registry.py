"""Registries: a model added in its own module only is stored, checked and built; dense optimizers by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from recframe.config.compose import compose_config
from recframe.config.validate import validate
from recframe.models import MODELS, CheckContext, ModelContext, ModelEntry
from recframe.registry import Registry
from recframe.sparse import Batch
from recframe.training.builders import build_model, build_objective
from recframe.training.dense_optimizers import DENSE_OPTIMIZERS, build_dense_optimizer
from recframe.training.objectives import CTRObjective


def test_a_registry_refuses_a_name_twice_and_lists_the_known_ones() -> None:
    colors: Registry[int] = Registry("color")
    colors.add("red", 1)
    with pytest.raises(ValueError, match="color 'red' is registered twice"):
        colors.add("red", 2)
    with pytest.raises(ValueError, match=r"unknown color 'blue'; choose one of \['red'\]"):
        colors["blue"]
    assert "red" in colors and list(colors) == ["red"] and colors.items() == [("red", 1)]


@dataclass
class ToyConfig:
    name: str = "toy"
    width: int = 4


class Toy(nn.Module):
    def __init__(self, embeddings: nn.Module, num_dense: int, width: int) -> None:
        super().__init__()
        self.embeddings, self.linear = embeddings, nn.Linear(num_dense, width)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.linear(batch.dense_features).sum(1)


def _toy_problems(node: Any, context: CheckContext) -> list[tuple[str, str, str]]:
    return [("model.width", f"must be even, got {node.width}", "")] if node.width % 2 else []


def test_a_model_registered_in_its_own_module_is_built_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[ModelContext] = []

    def build(node: Any, context: ModelContext) -> Toy:
        built.append(context)
        return Toy(context.embeddings(None), context.num_dense_features, node.width)

    monkeypatch.setitem(MODELS._entries, "toy", ModelEntry(schema=ToyConfig, build=build, check=_toy_problems))
    cfg = compose_config(["+experiment=dlrm", "tables.num_embeddings=100", "run_dir=unused"])
    OmegaConf.set_struct(cfg, False)
    cfg.model = OmegaConf.structured(ToyConfig(width=6))
    model = build_model(cfg)
    assert isinstance(model, Toy) and model.linear.out_features == 6
    assert built[0].num_dense_features == 13 and built[0].tasks == []  # ToyConfig has no tasks
    assert isinstance(build_objective(cfg), CTRObjective)
    assert validate(cfg) == []
    cfg.model.width = 5
    assert [(p.key, p.message) for p in validate(cfg)] == [("model.width", "must be even, got 5")]


def test_an_unknown_model_name_is_a_config_problem() -> None:
    cfg = compose_config(["+experiment=dlrm", "run_dir=unused"])
    OmegaConf.set_struct(cfg, False)
    cfg.model.name = "dlrn"
    problems = validate(cfg)
    assert [(p.key, p.hint) for p in problems if p.key == "model.name"] == [("model.name", "did you mean 'dlrm'?")]


def test_every_model_of_the_zoo_has_its_yaml_and_schema() -> None:
    for name, entry in MODELS.items():
        assert entry.schema().name == name
        cfg = compose_config(["+experiment=dlrm", f"model={name}", "run_dir=unused"])
        assert cfg.model.name == name


@pytest.mark.parametrize("name", ["adagrad", "adam", "adamw", "sgd"])
def test_dense_optimizers_by_name_with_the_kernel_their_device_gets(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    optim = compose_config(["+experiment=dlrm", f"optim.dense.name={name}", "run_dir=unused"]).optim
    params = list(nn.Linear(2, 2).parameters())
    optimizer = build_dense_optimizer(params, optim)
    assert type(optimizer).__name__.lower() == name
    assert optimizer.defaults["fused"] is True  # torch's fused CPU kernel
    seen = []
    entry = DENSE_OPTIMIZERS[name]
    monkeypatch.setitem(DENSE_OPTIMIZERS._entries, name,
                        type(entry)(make=lambda p, c, kernel: seen.append(kernel), fused_on_cuda=entry.fused_on_cuda))
    build_dense_optimizer(params, optim, torch.device("cuda"))
    assert seen == [{"fused": True}]  # adagrad's: recframe's FusedAdagrad (tests/unit/training/test_fused_adagrad.py)
    optim.dense.fused = False
    build_dense_optimizer(params, optim, torch.device("cuda"))
    build_dense_optimizer(params, optim)
    assert seen[1:] == [{"foreach": True}, {}]


def test_an_unknown_dense_optimizer_names_the_known_ones() -> None:
    optim = compose_config(["+experiment=dlrm", "optim.dense.name=adamx", "run_dir=unused"]).optim
    with pytest.raises(ValueError, match=r"unknown dense optimizer 'adamx'; choose one of \['adagrad', 'adam'"):
        build_dense_optimizer([], optim)


def test_every_data_option_has_a_registered_source() -> None:
    from recframe.config.store import CONFIG_DIR
    from recframe.data.catalog import DATA_SOURCES

    kinds = set()
    for option in sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")):
        cfg = compose_config(["+experiment=dlrm", f"data={option}", "run_dir=unused"])
        kinds.add(cfg.data.kind)
    assert kinds <= set(DATA_SOURCES.names()), kinds - set(DATA_SOURCES.names())


def test_a_data_source_is_built_from_its_kind_and_an_unknown_kind_names_the_known_ones() -> None:
    from recframe.data.catalog import build_source
    from recframe.data.source import SyntheticSource

    cfg = compose_config(["+experiment=dlrm", "tables.num_embeddings=100", "run_dir=unused"])
    source = build_source(cfg)
    assert isinstance(source, SyntheticSource) and source.batch_size == cfg.data.batch_size
    OmegaConf.set_struct(cfg, False)
    cfg.data.kind = "parquet"
    with pytest.raises(ValueError, match=r"unknown data source 'parquet'; choose one of \["):
        build_source(cfg)

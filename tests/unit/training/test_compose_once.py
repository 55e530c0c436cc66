"""A job's config is composed once, by Hydra, and checked there (issue 18; recframe.training.compose_once).

The commands run in-process through ``recframe.cli.main``, with Hydra's ``ConfigLoaderImpl.load_configuration``
counting its calls: a run composes once (Hydra 1.3 alone composes twice, recframe's former check once more), a
``-m`` sweep once for the sweep and once per job (Hydra alone: 1 + 1 + 2 per job); a config with a problem is
refused with every problem at once, exit code 2, before any run folder exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recframe.training.compose_once import _with_mode, composing_once
from tests.cli_in_process import recframe_runner

QUIET = ["+experiment=dlrm", "logger.tensorboard=false"]


@pytest.fixture
def compositions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The overrides of each composition Hydra makes (each call of ConfigLoaderImpl.load_configuration)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    calls: list[list[str]] = []
    load = ConfigLoaderImpl.load_configuration

    def counted(self, config_name, overrides, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(list(overrides))
        return load(self, config_name, overrides, *args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counted)
    return calls


@pytest.fixture
def recframe(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    """Call ``recframe ARGS`` as the installed script: returns (exit code, stdout, stderr)."""
    return recframe_runner(monkeypatch, capsys, "plan")


def test_a_run_composes_once(recframe, compositions: list[list[str]], tmp_path: Path) -> None:  # noqa: ANN001
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    counter = ConfigLoaderImpl.load_configuration
    code, out, err = recframe("plan", *QUIET, f"hydra.run.dir={tmp_path}")
    assert code == 0, err
    assert (tmp_path / "sharding_plan.json").exists() and "t_cat_0" in out
    assert len(compositions) == 1, compositions
    assert ConfigLoaderImpl.load_configuration is counter, "Hydra's loader is put back"


def test_a_sweep_composes_once_per_job(recframe, compositions: list[list[str]], tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = recframe("plan", "-m", *QUIET, "world_size=1,2", f"hydra.sweep.dir={tmp_path}")
    assert code == 0, err
    assert len(list(tmp_path.glob("*_world_size=*/sharding_plan.json"))) == 2
    assert len(compositions) == 3, compositions  # the sweep's, then one per job
    assert ["world_size=1", "world_size=2"] == [c[-1] for c in compositions[1:]]


def test_a_problem_is_found_in_hydras_composition(recframe, compositions: list[list[str]],  # noqa: ANN001
                                                  tmp_path: Path) -> None:
    code, _, err = recframe("train", "+experiment=dlrm", "trainer.max_steps=-5", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2
    assert err == ("recframe train: the config has 1 problem; nothing was built:\n"
                   "  trainer.max_steps: synthetic data is an endless stream: set trainer.max_steps > 0\n")
    assert len(compositions) == 1, compositions
    assert not (tmp_path / "run").exists()


def test_each_job_of_a_sweep_is_checked_before_any_runs(recframe, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = recframe("plan", "-m", *QUIET, "world_size=1,0", f"hydra.sweep.dir={tmp_path}")
    assert code == 2
    assert "recframe plan: the config has 1 problem" in err and "world_size: must be >= 1, got 0" in err
    assert not list(tmp_path.glob("*/sharding_plan.json")), "the first job did not run either"


def test_a_failed_composition_lists_every_bad_override(recframe, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = recframe("train", "+experiment=dlrm", "trainer.max_step=5", "optim.sparse.lrr=1", "model=dlrn",
                            f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("recframe train: the config has 3 problems; nothing was built:\n")
    assert "model: unknown option 'dlrn'" in err and "(did you mean 'trainer.max_steps'?)" in err
    assert "(did you mean 'optim.sparse.lr'?)" in err and "hydra.mode" not in err
    assert not (tmp_path / "run").exists()


def test_the_run_mode_hydra_appends_is_applied_as_hydra_composes_it() -> None:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from recframe.config.compose import _hydra_context

    overrides = ["+experiment=dlrm", "hydra.run.dir=x"]
    with _hydra_context():
        loader = GlobalHydra.instance().config_loader()
        first = loader.load_configuration("train", overrides, RunMode.RUN)
        second = loader.load_configuration("train", [*overrides, "hydra.mode=RUN"], RunMode.RUN)
    derived = _with_mode(first, ["hydra.mode=RUN"])
    assert OmegaConf.to_yaml(derived) == OmegaConf.to_yaml(second)
    assert _with_mode(first, ["trainer.max_steps=5"]) is None  # any other override is composed


def test_a_composition_asked_again_is_a_copy_checked_once(compositions: list[list[str]]) -> None:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from recframe.config.compose import _hydra_context

    checked = []

    def check(cfg, overrides):  # noqa: ANN001, ANN202
        checked.append(("hydra" in cfg, overrides))
        return []

    overrides = ["+experiment=dlrm"]
    with composing_once(check, diagnose=lambda failed: [], command="recframe train"):
        with _hydra_context():
            loader = GlobalHydra.instance().config_loader()
            first = loader.load_configuration("train", overrides, RunMode.RUN)
            again = loader.load_configuration("train", overrides, RunMode.RUN)
        with _hydra_context():  # another loader (a job's own compose_config): composed as Hydra does, unchecked
            GlobalHydra.instance().config_loader().load_configuration("train", overrides, RunMode.RUN)
    assert first is not again and OmegaConf.to_yaml(first) == OmegaConf.to_yaml(again)
    assert len(compositions) == 2 and checked == [(False, overrides)]

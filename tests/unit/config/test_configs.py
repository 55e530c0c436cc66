"""Every config file composes; bad command lines give one message listing every problem."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from recframe.config.problems import format_problems
from recframe.config.store import CONFIG_DIR
from recframe.training.checks import check_config, compose_config, find_problems
from tests.shared_data import experiment_data_args

GROUP_FILES = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p.parent != CONFIG_DIR)
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_config_files_exist() -> None:
    assert (CONFIG_DIR / "train.yaml").is_file()
    assert "dlrm" in EXPERIMENTS
    assert len(GROUP_FILES) >= 10


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_config_file_composes(path) -> None:
    group = path.parent.relative_to(CONFIG_DIR).as_posix()
    if group == "experiment":
        overrides = [f"+experiment={path.stem}"]
    elif group == "model_for_data":  # <data>_<model>: picked by the data and model chosen (configs/train.yaml)
        data = next(d.stem for d in (CONFIG_DIR / "data").glob("*.yaml") if path.stem.startswith(f"{d.stem}_"))
        overrides = [f"data={data}", f"model={path.stem.removeprefix(f'{data}_')}"]
    else:
        overrides = [f"{group}={path.stem}"]
    # A group file may need a matching experiment (a two-tower model needs retrieval data):
    # it composes, and any semantic problem it has must name a key, never crash.
    cfg = compose_config(overrides)
    OmegaConf.to_container(cfg.model)  # the model node resolves
    for problem in check_config(cfg):
        assert problem.key and problem.message


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_is_valid(experiment: str) -> None:
    assert find_problems([f"+experiment={experiment}", *experiment_data_args(experiment)]) == []


def test_misspelled_key_suggests_the_right_one() -> None:
    problems = find_problems(["+experiment=dlrm", "trainer.max_step=5"])
    assert [(p.key, p.hint) for p in problems] == [("trainer.max_step", "did you mean 'trainer.max_steps'?")]


def test_every_problem_is_listed_at_once() -> None:
    problems = find_problems(["+experiment=dlrm", "trainer.max_step=5", "optim.sparse.lrr=0.1", "model=dlrn",
                              "data.batch_size=abc"])
    keys = [p.key for p in problems]
    assert keys == ["model", "trainer.max_step", "optim.sparse.lrr", "data.batch_size"], problems
    assert "did you mean 'dlrm'?" in problems[0].hint
    assert problems[2].hint == "did you mean 'optim.sparse.lr'?"


def test_unknown_experiment_names_the_choices() -> None:
    (problem,) = find_problems(["+experiment=dlrn"])
    assert problem.key == "+experiment"
    assert "dlrm" in problem.message and problem.hint == "did you mean 'dlrm'?"


def test_table_naming_unknown_feature_and_interaction_mismatch() -> None:
    problems = find_problems(["+experiment=dlrm", "tables.specs.t_cat_0.features=[cat_O]",
                              "tables.specs.t_cat_1.embedding_dim=32"])
    text = format_problems(problems)
    assert "tables.specs.t_cat_0.features: unknown feature 'cat_O' (did you mean 'cat_0'?)" in text
    assert "sparse feature 'cat_0' is served by no table" in text
    assert "model.bottom_mlp" in text and "t_cat_1" in text


def test_cli_reports_problems_with_exit_code_2_and_no_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recframe", "train", "+experiment=dlrm", "trainer.max_step=5", "optim.sparse.lrr=1",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "2 problems" in result.stderr and "trainer.max_step" in result.stderr and "optim.sparse.lrr" in result.stderr
    assert not (tmp_path / "run").exists()

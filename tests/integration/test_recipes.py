"""The recipes stay true: every command of a recipe README's ```` ```sh smoke ```` blocks runs on the sample data
(``$DATA``: ``tests.shared_data.SHARED_DATA``) and succeeds, with training cut to a few steps and small tables. The
default tier runs each recipe's first block (one training run each); the slow tier runs every block (about 13 runs,
1.5-3 minutes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_data import SHARED_DATA, require

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMOKE_BLOCK = re.compile(r"^```sh smoke\n(.*?)^```", re.S | re.M)
REPO_PATH = re.compile(r"(?<![\w/.])(recipes|scripts)/")
# appended to every `recframe train`: a few steps, a little validation, small tables, no checkpoints
FEW_STEPS = ["trainer.max_steps=3", "trainer.limit_val_batches=2", "tables.row_cap=1000",
             "trainer.enable_progress_bar=false", "checkpoint.every_n_steps=0", "logger.table_stats_every_n_steps=0"]
# (recipe, smoke-tested commands it must have: fewer means a block lost its marker)
RECIPES = [("criteo", 8), ("movielens", 6), ("tabular", 4)]
# appended to scripts/tabular_zoo.py (it runs recframe train's job in its process): one seed, a few steps
ZOO_FEW_STEPS = ["--seeds", "1", "--lr-epochs", "1", "--set", *FEW_STEPS]


def smoke_commands(readme: Path, blocks: int | None = None) -> list[str]:
    """The commands of ``readme``'s first ``blocks`` (None: all) ```` ```sh smoke ```` blocks, one per line
    (``\\`` continuations joined).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "README.md"
        >>> _ = path.write_text("```sh smoke\\nrecframe train \\\\\\n  a=1\\nls\\n```\\n```sh\\nnot this\\n```\\n")
        >>> smoke_commands(path)
        ['recframe train a=1', 'ls']
    """
    out = []
    for block in SMOKE_BLOCK.findall(readme.read_text())[:blocks]:
        text = re.sub(r"\\\n\s*", "", block)
        out += [line.strip() for line in text.splitlines() if line.strip()]
    return out


def runnable(command: str, run_dir: Path) -> str:
    """``command`` as run here: paths to the data and the repository made absolute, recframe and python from this
    interpreter, training cut short into ``run_dir``."""
    command = command.replace("../shared/data/", f"{SHARED_DATA}/")  # a recipe that still names the folder
    command = REPO_PATH.sub(lambda m: f"{REPO}/{m.group(1)}/", command)
    command = re.sub(r"^recframe ", f"{sys.executable} -m recframe ", command)
    command = re.sub(r"^python ", f"{sys.executable} ", command)
    if " -m recframe train " in command:
        command += " " + " ".join([*FEW_STEPS, f"hydra.run.dir={run_dir}"])
    if "scripts/tabular_zoo.py " in command:
        command = command.split(" #")[0] + " " + " ".join(ZOO_FEW_STEPS)
    return command


def run_commands(commands: list[str], tmp_path: Path) -> None:
    for k, command in enumerate(commands):
        run_dir = tmp_path / f"run{k}"
        result = subprocess.run(["bash", "-c", runnable(command, run_dir)], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600, env={**os.environ, "DATA": str(SHARED_DATA)})  # $DATA
        assert result.returncode == 0, f"{command}\n{(result.stdout + result.stderr)[-3000:]}"
        if " train " in command:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert metrics["global_step"] == 3 and any(k.startswith("val/") for k in metrics), (command, metrics)


@pytest.mark.parametrize("recipe", [r for r, _ in RECIPES])
def test_first_block_of_each_recipe_runs(recipe: str, tmp_path: Path) -> None:
    require(SHARED_DATA)
    commands = smoke_commands(REPO / "recipes" / recipe / "README.md", blocks=1)
    assert any(c.startswith("recframe train ") for c in commands), commands
    run_commands(commands, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "expected"), RECIPES)
def test_every_smoke_block_runs(recipe: str, expected: int, tmp_path: Path) -> None:
    require(SHARED_DATA)
    commands = smoke_commands(REPO / "recipes" / recipe / "README.md")
    assert len(commands) >= expected, f"recipes/{recipe}/README.md: {len(commands)} smoke commands: {commands}"
    run_commands(commands, tmp_path)

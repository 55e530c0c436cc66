"""The wheel works anywhere (issue 18, item 1): built from the tree, installed into a fresh venv, run outside the repo.

The tree keeps one copy of the configs (the top-level ``configs/``); setup.py maps it into the package as
``recframe.configs`` at build time. This test builds the wheel from a copy of the sources (no build
isolation: the project venv's setuptools, no download), installs it with ``--no-deps`` into a new venv
that sees the project venv's site-packages through a ``.pth`` line (torch and the rest are reused, not
installed; the project's editable recframe is not: that folder's own ``.pth`` files are not run), and,
from a folder outside the repository, trains ``+experiment=dlrm`` for 5 steps (small tables) and plans
for two ranks an experiment of the user's own config folder (``--config-dir``) that composes recframe's
``dlrm`` with another model. About 25 s.

How it fails: without setup.py's mapping the wheel has no ``recframe/configs/*.yaml`` (the first
assertion; the installed ``recframe train`` then finds no ``train.yaml``); a pre-check that does not see
the user's folder refuses ``+experiment=mine``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from recframe.config.store import CONFIG_DIR

pytestmark = pytest.mark.integration

REPO = CONFIG_DIR.parent
SOURCES = ("recframe", "configs", "setup.py", "pyproject.toml", "README.md")
SMALL = ["tables.num_embeddings=1000", "data.batch_size=64", "data.num_val_batches=2", "model.bottom_mlp=[16,8]",
         "model.top_mlp=[16]", "tables.embedding_dim=8", "trainer.enable_progress_bar=false"]
USER_EXPERIMENT = """# @package _global_
# a user's experiment: recframe's dlrm, with DeepFM's towers and small tables
defaults:
  - /experiment/dlrm
  - override /model: deepfm

tables:
  num_embeddings: 500
"""


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RECFRAME_COMMAND")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout[-2000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    return result


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of the sources (the tree itself gets no build/ or egg-info folders)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
          "--no-build-isolation", "--no-index", "-w", str(out / "dist"), str(src)], cwd=out)
    (wheel,) = (out / "dist").glob("recframe-*.whl")
    return wheel


def fresh_venv(where: Path, wheel: Path) -> Path:
    """A new venv holding the wheel only; the dependencies come from the project venv's site-packages."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(where)], cwd=where.parent)
    python = where / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--disable-pip-version-check",
          "--no-deps", "--no-index", str(wheel)], cwd=where.parent)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=where.parent).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "project_dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    return where / "bin"


def test_wheel_trains_and_plans_outside_the_repository(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "build")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("recframe/configs/") for n in names if n.startswith("recframe/configs/")}
    expected = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")}
    assert expected and expected <= shipped, f"configs missing from the wheel: {sorted(expected - shipped)[:5]}"
    assert not any(n.startswith("configs/") for n in names), "configs/ must ship inside the package"

    bin_dir = fresh_venv(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing of the tree is on the path
    elsewhere.mkdir()
    where = _run([str(bin_dir / "python"), "-c", "import recframe.configs as c, recframe; print(recframe.__file__); "
                  "print(c.__file__)"], cwd=elsewhere).stdout.split()
    assert all(str(tmp_path / "venv") in path for path in where), f"recframe imported from {where}, not the wheel"

    run_dir = elsewhere / "run"
    _run([str(bin_dir / "recframe"), "train", "+experiment=dlrm", "trainer.max_steps=5", *SMALL,
          f"hydra.run.dir={run_dir}"], cwd=elsewhere)
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 5

    (elsewhere / "my_configs" / "experiment").mkdir(parents=True)
    (elsewhere / "my_configs" / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    plan = _run([str(bin_dir / "recframe"), "plan", "--config-dir", "my_configs", "+experiment=mine", "world_size=2",
                 "hydra.run.dir=plan"], cwd=elsewhere)
    assert "26 tables" in plan.stdout and "500 x 64" in plan.stdout, plan.stdout[-2000:]
    assert (elsewhere / "plan" / "sharding_plan.json").is_file()

"""Hydra's own flags behind recframe's config check (issue 18, item 2): they print and run no job.

``recframe train -sc install=bash`` was refused by the check (``install: no such key``), the completion
script's queries failed on the subcommand (``Error parsing override 'train'``), and ``--hydra-help`` with
an experiment ended in a traceback (Hydra composes its help without the primary config). Run in-process
through ``recframe.cli.main``, as the console script runs it.
"""

from __future__ import annotations

import pytest

from tests.cli_in_process import recframe_runner


@pytest.fixture
def recframe(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    """Call ``recframe ARGS`` as the installed script: returns (exit code, stdout, stderr)."""
    return recframe_runner(monkeypatch, capsys, "train")


def test_shell_completion_script_is_printed(recframe) -> None:  # noqa: ANN001
    code, out, err = recframe("train", "-sc", "install=bash")
    assert code == 0, err
    assert "hydra_bash_completion()" in out
    assert out.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion recframe")


def test_completion_queries_complete_the_words_after_the_subcommand(recframe, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("COMP_LINE", "recframe train +experiment=dl")
    code, out, err = recframe("-sc", "query=bash")
    assert code == 0, err
    assert out.split() == ["+experiment=dlrm", "+experiment=dlrm_dcn"]
    monkeypatch.setenv("COMP_LINE", "recframe plan trainer.max_st")
    assert recframe("-sc", "query=bash")[1].split() == ["trainer.max_steps="]


def test_hydra_help_with_an_experiment(recframe) -> None:  # noqa: ANN001
    code, out, err = recframe("train", "+experiment=dlrm", "hydra/launcher=basic", "--hydra-help")
    assert code == 0, err
    assert "== Flags ==" in out and "hydra/launcher: basic" in out
    assert "Traceback" not in err


def test_info_shows_the_package_search_path(recframe) -> None:  # noqa: ANN001
    code, out, err = recframe("train", "+experiment=dlrm", "--info", "searchpath")
    assert code == 0, err
    assert "pkg://recframe.configs" in out

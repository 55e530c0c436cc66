"""``recframe train --cfg job`` / ``--cfg hydra`` print the config without reading or checking any data file
(issue 16, item 5): a table that does not exist yet is no reason to refuse printing its run's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from recframe.training.app import train_command


@pytest.mark.parametrize("what", ["job", "hydra"])
def test_cfg_prints_without_touching_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                what: str) -> None:
    absent = tmp_path / "not_yet"
    code = train_command(["+experiment=tabular", f"data.path={absent}.csv", f"data.spec={absent}.yaml", "--cfg", what])
    out = capsys.readouterr().out
    assert code == 0
    if what == "job":
        assert f"path: {absent}.csv" in out and "${feature_spec:${data.spec},dense}" in out  # printed, not resolved
    else:
        assert "run:" in out and "dir: outputs/" in out
    assert not list(tmp_path.iterdir())  # nothing written, nothing read


def test_a_run_still_checks_its_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = tmp_path / "no"
    code = train_command(["+experiment=tabular", f"data.path={absent}.csv", f"data.spec={absent}.yaml"])
    assert code == 2 and "no such file" in capsys.readouterr().err

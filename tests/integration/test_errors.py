"""One error path (issue 17): an error the user can fix ends the command with one message naming the file and
line (or the key), exit code 2 and no traceback, wherever it is found, inside ``trainer.fit`` too; ``--debug``
and ``hydra.verbose=true`` show the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import run_recframe

pytestmark = pytest.mark.integration

SMALL = ["trainer.enable_progress_bar=false", "trainer.limit_val_batches=1", "data.batch_size=32"]
GOOD = "\t".join(["0", *["1"] * 13, *["68fd1e64"] * 26])


def criteo_file(tmp_path: Path) -> Path:
    """200 good lines and one line of garbage (line 150): read while training (in the data module's setup)."""
    lines = [GOOD] * 200
    lines[149] = "\x00\xff garbage"
    path = tmp_path / "train.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def train(tmp_path: Path, *extra: str) -> tuple[int, str]:
    result = run_recframe("train", "+experiment=criteo_kaggle", f"data.path={criteo_file(tmp_path)}",
                          "data.on_error=error", "trainer.max_steps=2", *SMALL, f"hydra.run.dir={tmp_path / 'run'}",
                          *extra)
    return result.returncode, result.stderr


def test_a_data_error_found_while_training_is_one_message_and_exit_2(tmp_path: Path) -> None:
    code, stderr = train(tmp_path)
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr and "Error executing job" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("recframe train: ")]
    assert errors == [f"recframe train: {tmp_path / 'train.txt'}:150: 1 tab-separated fields, expected 40 (label, "
                      "13 integer, 26 hexadecimal); fix or remove the line, or set data.on_error=skip to skip and "
                      "count malformed lines"]


@pytest.mark.parametrize("flag", ["--debug", pytest.param("hydra.verbose=true", marks=pytest.mark.slow)])
def test_debug_shows_the_traceback(tmp_path: Path, flag: str) -> None:
    code, stderr = train(tmp_path, flag)
    assert code == 2, stderr[-3000:]
    assert "Traceback (most recent call last)" in stderr and "DataError" in stderr
    assert stderr.rstrip().splitlines()[-1].startswith(f"recframe train: {tmp_path / 'train.txt'}:150: ")


@pytest.mark.distributed
def test_a_data_error_of_two_processes_is_reported_not_a_lost_rank(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, "trainer.devices=2")
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr and " lost (" not in stderr  # every rank found it: no rank is lost
    ours = [line for line in stderr.splitlines() if line.startswith("recframe train: ")]
    assert f"recframe train: {tmp_path / 'train.txt'}:150: 1 tab-separated fields, expected 40" in "\n".join(ours)
    assert all(line.startswith(("recframe train: /", "recframe train: rank 1: /")) for line in ours), ours

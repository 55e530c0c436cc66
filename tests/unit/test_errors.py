"""recframe.errors: every user error is a RecframeError, reported as one message with its exit code; other
errors pass through; a DataLoader worker's traceback is cut from the message."""

from __future__ import annotations

import io

import pytest

from recframe.data.report import DataError
from recframe.distributed.planner.topology import PlanningError
from recframe.errors import ConfigError, RecframeError, debug_enabled, find_error, one_line, reported
from recframe.registry import Registry
from recframe.training.checkpoint.folder import CheckpointReadError, CheckpointWriteError
from recframe.training.checkpoint.safety import UnsafeCheckpointError


def test_every_user_error_is_a_recframe_error_with_its_exit_code() -> None:
    for kind in (DataError, CheckpointReadError, UnsafeCheckpointError, PlanningError, ConfigError):
        assert issubclass(kind, RecframeError) and kind.exit_code == 2, kind
    assert issubclass(CheckpointWriteError, RecframeError) and CheckpointWriteError.exit_code == 1  # the machine's
    assert issubclass(DataError, ValueError) and issubclass(CheckpointReadError, ValueError)  # callers catch these
    with pytest.raises(ConfigError, match=r"unknown model 'os.system'; choose one of \['dlrm'\]"):
        models: Registry[type] = Registry("model")
        models.add("dlrm", object)
        models["os.system"]


def report_of(error: BaseException) -> tuple[int, str]:
    out = io.StringIO()
    with pytest.raises(SystemExit) as stop, reported("recframe train", stderr=out):
        raise error
    return int(stop.value.code), out.getvalue()


def test_reported_prints_one_line_and_exits_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECFRAME_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert report_of(DataError("a.csv:3: column x: 'z' is not a finite number")) == (
        2, "recframe train: a.csv:3: column x: 'z' is not a finite number\n")
    assert report_of(CheckpointWriteError("cannot write step-5: disk full")) == (
        1, "recframe train: cannot write step-5: disk full\n")
    try:  # an error raised while handling a RecframeError (a library wrapping it) still reports the cause
        try:
            raise DataError("a.csv:9: bad")
        except DataError as cause:
            raise RuntimeError("the data module failed") from cause
    except RuntimeError as wrapped:
        assert report_of(wrapped) == (2, "recframe train: a.csv:9: bad\n")
    worker = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                       "last):\n  File \"x.py\", line 3, in f\n    raise DataError(...)\n"
                       "recframe.data.report.DataError: a.csv:7: column y: 'q' is not a int value\n")
    assert report_of(worker) == (2, "recframe train: a.csv:7: column y: 'q' is not a int value\n")
    with pytest.raises(KeyError), reported("recframe train"):  # not a user error: the traceback stays
        raise KeyError("bug")


def test_debug_prints_the_traceback_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECFRAME_DEBUG", "1")
    code, text = report_of(DataError("a.csv:3: bad"))
    assert code == 2 and text.startswith("Traceback (most recent call last)")
    assert text.endswith("recframe train: a.csv:3: bad\n")
    monkeypatch.delenv("RECFRAME_DEBUG")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert debug_enabled(["--debug"]) and debug_enabled(["hydra.verbose=[recframe]"])
    assert not debug_enabled(["hydra.verbose=false"]) and not debug_enabled([])


def test_find_error_and_one_line() -> None:
    assert find_error(ValueError("x")) is None
    assert one_line(ValueError("plain")) == "plain"

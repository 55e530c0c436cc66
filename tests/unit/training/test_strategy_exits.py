"""ShardedStrategy.on_exception: exits every rank takes together say goodbye; other errors leave without one."""

from __future__ import annotations

import pytest

from recframe.data.report import DataError
from recframe.training.checkpoint.folder import CheckpointReadError, CheckpointWriteError
from recframe.training.checkpoint.safety import UnsafeCheckpointError
from recframe.training.strategy import ShardedStrategy


class FakeWatchdog:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def mark_failed(self) -> None:
        self.calls.append("failed")

    def interrupted_here(self) -> None:
        self.calls.append("interrupted")


@pytest.mark.parametrize(("exception", "calls"), [
    (CheckpointWriteError("disk full"), []),
    (CheckpointReadError("damaged"), []),
    (UnsafeCheckpointError("pickle"), []),
    (SystemExit(143), []),
    (KeyboardInterrupt(), ["interrupted"]),
    (RuntimeError("a bug on this rank"), ["failed"]),
    (DataError("x.csv:3: bad"), []),
])
def test_checkpoint_errors_are_agreed_exits_not_lost_ranks(exception: BaseException, calls: list[str]) -> None:
    strategy = ShardedStrategy(timeout_s=10.0, startup_timeout_s=10.0, watchdog=True, process_group_backend="gloo")
    watchdog = FakeWatchdog()
    strategy.watchdog = watchdog  # type: ignore[assignment]
    strategy.on_exception(exception)
    assert watchdog.calls == calls

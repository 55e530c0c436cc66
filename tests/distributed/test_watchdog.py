"""PeerWatchdog between real processes (no process group, no Lightning; seconds each).

A killed peer is named by every other rank within a few seconds (its connection closes); a
stopped one after the timeout; ranks that finish normally at different times say goodbye and
exit 0 (no false alarm, no abort at interpreter exit); a rank leaving through an error makes
the others stop. Every process is killed at the end, whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.processes import alive, group_members, kill_group, wait_until

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator:
    """``launch(world, timeout_s, scenario)``: start the ranks, wait until every watchdog is up; kill all at the end."""
    started: list[subprocess.Popen] = []

    def start(world: int, timeout_s: float | str, scenario: str) -> list[subprocess.Popen]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for rank in range(world):
            log = open(tmp_path / f"rank{rank}.log", "w")
            started.append(subprocess.Popen(
                [sys.executable, "-m", "tests.distributed.watchdog_worker", str(rank), str(world), str(tmp_path),
                 str(timeout_s), scenario], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True))
        wait_until(lambda: all((tmp_path / f"ready_{r}").exists() for r in range(world)), 60)
        return started

    yield start
    for p in started:
        kill_group(p.pid)
        p.wait()


def output(tmp_path: Path, rank: int) -> str:
    return (tmp_path / f"rank{rank}.log").read_text()


def test_killed_rank_is_named_by_every_other_rank_within_seconds(launch, tmp_path: Path) -> None:
    ranks = launch(3, 60.0, "wait")
    killed = time.monotonic()
    os.kill(ranks[1].pid, signal.SIGKILL)
    for rank in (0, 2):
        assert ranks[rank].wait(timeout=30) == 1
        assert "rank 1 lost (its connection closed" in output(tmp_path, rank), output(tmp_path, rank)
    assert time.monotonic() - killed < 10, "a dead peer is found by its closed connection, not the 60 s timeout"


def test_a_forked_worker_does_not_keep_a_dead_rank_alive(launch, tmp_path: Path) -> None:
    """Rank 1 dies but its forked child (a DataLoader worker) lives on: its copies of the sockets are closed."""
    ranks = launch(2, 60.0, "fork")
    wait_until(lambda: (tmp_path / "child_1").exists(), 10)
    worker = int((tmp_path / "child_1").read_text())
    os.kill(ranks[1].pid, signal.SIGKILL)
    killed = time.monotonic()
    assert ranks[0].wait(timeout=30) == 1
    assert "rank 1 lost (its connection closed" in output(tmp_path, 0)
    assert time.monotonic() - killed < 10 and alive(worker), "found while the worker still runs"
    os.kill(worker, signal.SIGKILL)


@pytest.mark.slow
def test_stopped_rank_is_lost_after_the_timeout(launch, tmp_path: Path) -> None:
    ranks = launch(2, 3.0, "wait")
    stopped = time.monotonic()
    os.kill(ranks[1].pid, signal.SIGSTOP)
    assert ranks[0].wait(timeout=30) == 1
    elapsed = time.monotonic() - stopped
    assert "rank 1 lost (no heartbeat for 3 s" in output(tmp_path, 0), output(tmp_path, 0)
    assert 2.0 < elapsed < 3.0 + 10.0, elapsed  # within the timeout (3 s), with slack for a busy machine
    assert alive(ranks[1].pid), "the stopped rank is not ours to kill here (it has no launcher)"


@pytest.mark.slow
def test_every_rank_names_the_rank_that_failed_first(launch, tmp_path: Path) -> None:
    """Rank 0 (timeout 2 s) finds the stopped rank 1 long before rank 2 (60 s) would: rank 2 learns it from rank 0."""
    ranks = launch(3, "2,60,60", "wait")
    os.kill(ranks[1].pid, signal.SIGSTOP)
    assert ranks[0].wait(timeout=30) == 1 and ranks[2].wait(timeout=10) == 1
    assert "rank 1 lost (no heartbeat for 2 s" in output(tmp_path, 0)
    assert "rank 1 lost (no heartbeat within the timeout: the process is stopped or hung (distributed.timeout_s); " \
           "reported by rank 0); stopping rank 2" in output(tmp_path, 2), \
        "rank 2 names rank 1, not rank 0 whose connection closed when it stopped"


def test_ranks_finishing_at_different_times_say_goodbye(launch, tmp_path: Path) -> None:
    ranks = launch(2, 1.0, "finish_at_rank_seconds")  # rank 0 exits at once, rank 1 three timeouts later
    assert [p.wait(timeout=30) for p in ranks] == [0, 0], [output(tmp_path, r) for r in range(2)]
    assert "rank 1 done" in output(tmp_path, 1)
    for rank in range(2):
        assert "lost" not in output(tmp_path, rank) and "terminate called" not in output(tmp_path, rank)


def test_rank_leaving_through_an_error_stops_the_others(launch, tmp_path: Path) -> None:
    ranks = launch(2, 60.0, "fail_rank0")
    assert ranks[0].wait(timeout=30) == 3
    assert ranks[1].wait(timeout=10) == 1
    assert "rank 0 lost (its connection closed" in output(tmp_path, 1)
    assert not group_members(ranks[1].pid)

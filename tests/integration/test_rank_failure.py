"""`recframe train` with 2 CPU processes when a rank dies or stops: the other exits non-zero, naming it, in time.

Faults are placed by the test-only hook ``RECFRAME_FAULT`` (recframe/distributed/faults.py): a rank
kills or stops itself inside the input dist at step 3, between two all-to-alls, so its peer is
waiting inside a collective. Killed: the survivor must exit non-zero within 30 s with
``rank R lost (its connection closed ...)``; stopped: within the configured timeout
(``distributed.timeout_s=10``) with ``rank R lost (no heartbeat for 10 s ...)``. Afterwards no
process of the run may be left (but a stopped rank 0, which nobody launched: the test kills it).
Every test kills the whole process group at the end, whatever happened.
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

from tests.distributed.processes import alive, child_of, group_members, kill_group, state, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

# backend=torch: the failure path does not depend on the kernels, and torch runs everywhere.
SMALL = ["+experiment=dlrm", "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8",
         "tables.num_embeddings=1000", "tables.backend=torch", "data.batch_size=64", "data.num_val_batches=2",
         "trainer.enable_progress_bar=false", "trainer.max_steps=1000", "trainer.val_check_interval=1000",
         "logger.tensorboard=false", "trainer.devices=2"]
ROOT = Path(__file__).resolve().parents[2]


class Run:
    """A `recframe train` of 2 ranks in its own process group; rank 0 is ``main``, rank 1 its child."""

    def __init__(self, tmp_path: Path, fault: str, *overrides: str) -> None:
        self.log = tmp_path / "out.log"
        env = {**os.environ, "RECFRAME_FAULT": fault}
        with open(self.log, "w") as out:
            self.main = subprocess.Popen([sys.executable, "-m", "recframe", "train", *SMALL, *overrides,
                                          f"hydra.run.dir={tmp_path / 'run'}"], stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=ROOT, start_new_session=True)

    def rank_pid(self, rank: int) -> int:
        return self.main.pid if rank == 0 else child_of(self.main.pid, timeout_s=60)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    runs: list[Run] = []

    def make(fault: str, *overrides: str) -> Run:
        runs.append(Run(tmp_path, fault, *overrides))
        return runs[-1]

    yield make
    for run in runs:
        kill_group(run.main.pid)
        run.main.wait()


def wait_gone(pid: int, timeout_s: float) -> float:
    return wait_until(lambda: not alive(pid), timeout_s)


@pytest.mark.parametrize("victim", [1, 0])
def test_rank_killed_inside_an_all_to_all_stops_the_other(start, victim: int) -> None:
    run = start(f"{victim}:input_dist:3:kill")
    survivor_pid, victim_pid = run.rank_pid(1 - victim), run.rank_pid(victim)
    died = wait_gone(victim_pid, 120)
    gone = wait_gone(survivor_pid, 30)
    text = run.output()
    assert f"rank {victim} lost (its connection closed: the process exited or was killed); stopping rank " \
           f"{1 - victim}" in text, text[-3000:]
    assert gone - died < 30
    if victim == 1:
        assert run.main.wait(timeout=5) != 0
    assert not group_members(run.main.pid), "no process of the run is left"


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_rank_killed_from_outside_mid_training_stops_the_other(start, victim: int) -> None:
    """SIGKILL from outside while training: the rank is paused at step 4 (so the kill lands mid-run), then killed."""
    run = start(f"{victim}:input_dist:4:stop")  # the timeout stays 300 s: only the closed connection can be fast
    victim_pid = run.rank_pid(victim)
    survivor_pid = run.rank_pid(1 - victim)
    wait_until(lambda: state(victim_pid) == "T", 120)
    os.kill(victim_pid, signal.SIGKILL)
    killed = time.monotonic()
    gone = wait_gone(survivor_pid, 30)
    assert f"rank {victim} lost (its connection closed" in run.output(), run.output()[-3000:]
    assert gone - killed < 30
    assert not group_members(run.main.pid), "no process of the run is left"


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_stopped_rank_stops_the_other_within_the_timeout(start, victim: int) -> None:
    run = start(f"{victim}:input_dist:3:stop", "distributed.timeout_s=10")
    victim_pid, survivor_pid = run.rank_pid(victim), run.rank_pid(1 - victim)
    stopped = wait_until(lambda: state(victim_pid) == "T", 120)
    gone = wait_gone(survivor_pid, 60)
    text = run.output()
    assert f"rank {victim} lost (no heartbeat for 10 s: the process is stopped or hung (distributed.timeout_s)); " \
           f"stopping rank {1 - victim}" in text, text[-3000:]
    # Lost 10 s after its last heartbeat (up to 1 s before the stop): within the timeout, with slack for a busy machine.
    assert gone - stopped < 10 + 10, gone - stopped
    if victim == 1:  # rank 0 launched rank 1: it killed it on its way out
        assert run.main.wait(timeout=5) == 1
        assert not group_members(run.main.pid)
    else:  # nobody launched rank 0: it stays stopped until the test's cleanup kills it
        assert group_members(run.main.pid) == [run.main.pid]


@pytest.mark.slow
def test_sigterm_exit_is_no_lost_rank(start, tmp_path: Path) -> None:
    """SIGTERM (final checkpoint, exit 143 on every rank) is a deliberate exit: no rank reports another lost."""
    run = start("", "checkpoint.every_n_steps=0")
    rank1 = run.rank_pid(1)
    wait_until(lambda: (tmp_path / "run" / "sharding_plan.json").exists(), 120)
    time.sleep(3)  # into training
    os.kill(run.main.pid, signal.SIGTERM)
    assert run.main.wait(timeout=60) == 143
    wait_gone(rank1, 10)
    text = run.output()
    assert text.count("SIGTERM: wrote the checkpoint") == 2 and " lost (" not in text, text[-3000:]


@pytest.mark.slow
def test_hung_rank_ends_in_the_configured_collective_timeout(start) -> None:
    """Rank 1's main thread hangs (its heartbeats go on): rank 0's all-to-all times out after distributed.timeout_s."""
    run = start("1:input_dist:3:hang", "distributed.timeout_s=10")
    rank1 = run.rank_pid(1)
    started = time.monotonic()
    assert run.main.wait(timeout=120) == 1
    text = run.output()
    assert "a collective timed out after 10 s (distributed.timeout_s)" in text, text[-3000:]
    assert "stopping rank 0 (every peer's heartbeat is alive)" in text
    assert time.monotonic() - started > 10
    wait_gone(rank1, 5)
    assert not group_members(run.main.pid)


@pytest.mark.slow
def test_without_the_watchdog_a_collective_error_still_ends_the_run(start) -> None:
    """distributed.watchdog=false: gloo's own error in the all-to-all gives the line (no rank to name)."""
    run = start("1:input_dist:3:kill", "distributed.watchdog=false")
    assert run.main.wait(timeout=120) == 1
    text = run.output()
    assert "a collective failed, a peer is probably lost (" in text and "stopping rank 0" in text, text[-3000:]
    assert not group_members(run.main.pid)


@pytest.mark.slow
def test_ranks_that_do_not_start_in_time_end_the_run(start) -> None:
    """distributed.startup_timeout_s=1: rank 1 (a new Python process) cannot join that fast; rank 0 says so."""
    run = start("", "distributed.startup_timeout_s=1")
    assert run.main.wait(timeout=120) == 1
    text = run.output()
    assert "not every rank started in time (distributed.startup_timeout_s)" in text, text[-3000:]
    wait_until(lambda: not group_members(run.main.pid), 10)


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_without_calling_one_lost(start, tmp_path: Path) -> None:
    run = start("")
    rank1 = run.rank_pid(1)
    wait_until(lambda: (tmp_path / "run" / "sharding_plan.json").exists(), 120)
    time.sleep(3)  # into training
    os.killpg(run.main.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert run.main.wait(timeout=60) != 0
    wait_gone(rank1, 10)
    assert " lost (" not in run.output(), run.output()[-3000:]

"""The pieces of failure handling that need no second process: error classification, messages, config, fault spec."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from recframe.distributed.faults import _parse
from recframe.distributed.watchdog import PeerWatchdog, RanksDidNotStart, describe_failure, is_collective_failure
from recframe.training.checks import find_problems

GLOO_RESET = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:26253: "
              "Connection reset by peer. This is typically caused by a remote worker hanging")
GLOO_TIMEOUT = "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms for recv"


def test_gloo_and_backend_errors_are_collective_failures_others_are_not() -> None:
    assert is_collective_failure(RuntimeError(GLOO_RESET))
    assert is_collective_failure(RuntimeError(GLOO_TIMEOUT))
    assert is_collective_failure(dist.DistBackendError("NCCL watchdog: collective operation timeout"))
    try:
        try:
            raise RuntimeError(GLOO_RESET)
        except RuntimeError as inner:
            raise ValueError("while computing the loss") from inner
    except ValueError as outer:
        assert is_collective_failure(outer), "a collective error a few exceptions down still counts"
    assert not is_collective_failure(ValueError("id 5000 out of range of table t_cat_3"))
    assert not is_collective_failure(RuntimeError("CUDA out of memory"))


def test_failure_lines_say_what_happened_and_which_setting() -> None:
    line = describe_failure(RuntimeError(GLOO_TIMEOUT), rank=1, timeout_s=10)
    assert line.startswith("a collective timed out after 10 s (distributed.timeout_s)")
    assert line.endswith("stopping rank 1") and "\n" not in line
    line = describe_failure(dist.DistStoreError("Timed out after 11 seconds waiting for clients. 1/2 clients joined."),
                            rank=0, timeout_s=10)
    assert line.startswith("not every rank started in time (distributed.startup_timeout_s) (Timed out after 11")
    # gloo's connection to a peer that is not there yet names only a store key (torch 2.13); the strategy raises it
    # as RanksDidNotStart from the process group's start
    line = describe_failure(RanksDidNotStart("wait timeout after 1000ms, keys: /0//cpu//0/1"), rank=0, timeout_s=10)
    assert line.startswith("not every rank started in time (distributed.startup_timeout_s) (wait timeout after")
    assert is_collective_failure(RanksDidNotStart("wait timeout"))
    line = describe_failure(RuntimeError(GLOO_RESET + "\nmore lines"), rank=0, timeout_s=10)
    assert line.startswith("a collective failed, a peer is probably lost (") and "more lines" not in line


def test_watchdog_explains_a_collective_error_by_what_it_knows() -> None:
    watchdog = PeerWatchdog(timeout_s=5.0, on_lost=print)
    watchdog.rank = 0
    assert watchdog.explain(RuntimeError(GLOO_TIMEOUT), wait_s=0.0).endswith("(every peer's heartbeat is alive)")
    watchdog.departed.add(2)
    assert watchdog.explain(RuntimeError(GLOO_RESET), wait_s=0.0).startswith(
        "rank 2 lost (it finished and exited while rank 0 still waited for it in a collective")
    watchdog.lost = "rank 1 lost (its connection closed: the process exited or was killed); stopping rank 0"
    assert watchdog.explain(RuntimeError(GLOO_RESET), wait_s=0.0) == watchdog.lost
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        PeerWatchdog(timeout_s=0.0, on_lost=print)


def test_timeout_is_a_validated_setting() -> None:
    assert find_problems(["+experiment=dlrm", "distributed.timeout_s=30"]) == []
    problems = find_problems(["+experiment=dlrm", "distributed.timeout_s=0", "distributed.startup_timeout_s=-1"])
    assert [p.key for p in problems] == ["distributed.timeout_s", "distributed.startup_timeout_s"]
    assert all("> 0" in p.message for p in problems)


def test_fault_spec() -> None:
    assert _parse(None) is None and _parse("") is None
    assert _parse("1:input_dist:3:kill") == (1, "input_dist", 3, "kill")
    with pytest.raises(ValueError, match="<kill|stop|hang>"):
        _parse("1:input_dist:3:explode")
    with pytest.raises(ValueError, match="RECFRAME_FAULT='1:input_dist:kill'.*e.g. 1:input_dist:3:kill"):
        _parse("1:input_dist:kill")

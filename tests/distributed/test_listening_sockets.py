"""Nothing of a run listens beyond the machine (issue 17, item 4): every listening socket of a two-process
``recframe train`` (the rendezvous store, gloo's connections, the watchdog), sampled from /proc while it runs,
is on loopback; and a watchdog refuses a connection that does not prove it belongs to the run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from recframe.distributed.watchdog import _FRAME, _HELLO, PeerWatchdog
from tests.distributed.processes import group_members, kill_group

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8", "tables.num_embeddings=1000",
         "data.batch_size=64", "data.num_val_batches=2", "trainer.enable_progress_bar=false", "trainer.max_steps=40"]


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6}'s ``0100007F:1F90`` as ``127.0.0.1:8080`` (IPv6 in hex)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"


def listening(pids: list[int]) -> set[str]:
    """The addresses that the processes ``pids`` listen on (TCP, IPv4 and IPv6), from /proc."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    out.add(_address(fields[1]))
    return out


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")


def test_no_socket_of_a_two_process_run_listens_beyond_loopback(tmp_path: Path) -> None:
    assert not is_loopback("0.0.0.0:1") and not is_loopback("[::]:1") and is_loopback("127.0.0.1:1")
    log = open(tmp_path / "run.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "recframe", "train", "+experiment=dlrm", *SMALL,
                                "trainer.devices=2", f"hydra.run.dir={tmp_path / 'run'}"], stdout=log,
                               stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen |= listening(group_members(process.pid))
            time.sleep(0.02)
        assert process.wait(timeout=10) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        kill_group(process.pid)
        process.wait()
    assert seen, "the run's store listens while the ranks meet: the sampling saw nothing"
    assert all(is_loopback(address) for address in seen), seen


def test_the_watchdog_refuses_a_peer_without_the_run_key(caplog: pytest.LogCaptureFixture) -> None:
    store = dist.HashStore()
    lost: list[str] = []
    zero, one = PeerWatchdog(30.0, lost.append), PeerWatchdog(30.0, lost.append)
    started = threading.Thread(target=zero.start, args=(store, 0, 2, "127.0.0.1"))
    started.start()
    host, port = store.get("watchdog/0").decode().rsplit(":", 1)
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(port))) as stranger:  # the old 12-byte HELLO of a "rank 1"
        stranger.sendall(_FRAME.pack(_HELLO, 1, 0) + b"\0" * 32)
        one.start(store, 1, 2, "127.0.0.1")
        started.join(timeout=30)
    try:
        assert not started.is_alive() and set(zero._sockets) == {1} and set(one._sockets) == {0}
        assert "refused a connection from 127.0.0.1 that did not prove it belongs to the run" in caplog.text
        assert not lost
    finally:
        one.close()
        zero.close()

"""Peer watchdog: a rank whose peer died or hangs stops with one clear line, never an endless hang.

What torch.distributed does on its own: when a peer process dies, the kernel closes its sockets
and a gloo collective waiting on it fails at once ("Connection closed/reset by peer", naming an
address, not a rank); a peer that is merely stopped (SIGSTOP, a frozen host) or a collective that
some rank never calls blocks until the process group's timeout (30 minutes unless set). The
watchdog builds on the same signal, on TCP connections of its own between every pair of ranks
(addresses exchanged through the process group's store), served by one thread: nothing per step.

- Every ``period_s`` each rank sends every peer a 12-byte heartbeat.
- A closed connection (the peer's process is gone: the kernel closes its sockets) makes the peer
  lost at once; no message from a peer for ``timeout_s`` (the configured collective timeout)
  makes it lost too (stopped or hung).
- A lost peer makes this rank tell the others which rank it lost (so every rank names the rank
  that failed first, not one that stopped because of it), then call ``on_lost`` with the line
  ``rank R lost (<why>); stopping rank S``; in training that is :func:`exit_now`, which kills the
  processes the rank launched and ``os._exit``\\ s (the main thread may be stuck in a collective).
- A rank that ends normally says goodbye (at interpreter exit) and its peers stop watching it; a
  rank leaving through an error says nothing (``mark_failed``): its peers see it as lost and stop;
  a rank interrupted by Ctrl-C says so (``interrupted``), and its peers stop without calling it lost.

Its listener binds to the address the peers reach this host by (``127.0.0.1`` when every rank runs
on one machine), and a peer must prove it belongs to the run: its HELLO carries an HMAC of the pair
of ranks under the run's key, made from a random nonce rank 0 puts in the store and, if set, the
``RECFRAME_RUN_TOKEN`` environment variable (give every node the same secret when the store is
reachable by others). A connection that fails the handshake is closed and logged, not trusted.

Why not a gloo group: a thread blocked in a gloo wait aborts the process (std::terminate) when the
wait returns while the interpreter shuts down; plain sockets in ``select`` do not.

:func:`is_collective_failure` and :meth:`PeerWatchdog.explain` turn a collective's own error into
the same line, naming the lost rank when the watchdog knows it.

Example (on every rank, once the default process group is up):
    >>> watchdog = start_watchdog(timeout_s=300.0, on_lost=exit_now)  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import hmac
import logging
import multiprocessing
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch.distributed as dist

from recframe.distributed.rendezvous import LOOPBACK, hello_mac, run_key

log = logging.getLogger("recframe")

EXIT_CODE = 1  # exit status of a rank stopped by a lost peer or a failed collective
_FRAME = struct.Struct("!iii")  # kind, rank, reason
_MAC_SIZE = 32  # the HMAC-SHA256 after a HELLO frame
_HELLO, _HEARTBEAT, _GOODBYE, _LOST, _INTERRUPTED = 0, 1, 2, 3, 4  # message kinds
_CLOSED, _SILENT = 0, 1  # why a peer is lost
# Substrings of gloo's errors when a peer is gone or a collective timed out (NCCL raises DistBackendError).
_COLLECTIVE_ERRORS = ("Connection closed by peer", "Connection reset by peer", "Timed out waiting",
                      "pair closure", "gloo/transport")

_exiting = threading.Lock()


def exit_now(message: str, children: Sequence[subprocess.Popen] = (), grace_s: float = 0.5) -> NoReturn:
    """Log ``message`` as an error, end the processes this one launched, and exit with ``EXIT_CODE``.

    Safe from any thread and from several at once (the first caller wins; the others wait for
    the exit). Children get ``grace_s`` to exit by themselves (the watchdog's notice may already
    have reached them; stopped ones are not waited for), then SIGKILL (which ends stopped ones
    too); DataLoader workers are killed.

    Args:
        message: the one line to log.
        children: processes this rank launched (Lightning's other local ranks, on rank 0).
        grace_s: seconds children get before SIGKILL.
    """
    if not _exiting.acquire(blocking=False):
        while True:  # another thread is exiting the process
            time.sleep(1.0)
    log.error(message)
    for handler in [*logging.getLogger().handlers, *log.handlers]:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None and not _stopped(p.pid) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in [*children, *multiprocessing.active_children()]:
        process.kill()
    for p in children:
        try:
            p.wait(timeout=grace_s)  # reap: no zombie left behind
        except subprocess.TimeoutExpired:
            pass
    os._exit(EXIT_CODE)


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): it will not exit by itself (Linux; False elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


class RanksDidNotStart(dist.DistError):
    """The process group's start failed: not every rank joined within ``distributed.startup_timeout_s`` (the store's
    rendezvous, or gloo's connections to each peer, whose errors name only a store key)."""


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a failed or timed-out collective."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, dist.DistError) or any(s in str(seen) for s in _COLLECTIVE_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe_failure(error: BaseException, rank: int, timeout_s: float) -> str:
    """The line for a failed collective when no lost peer is known (with the error's first line)."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    if isinstance(error, RanksDidNotStart) or "waiting for clients" in text:  # the process group's start
        return (f"not every rank started in time (distributed.startup_timeout_s) ({text}); stopping rank {rank}")
    if "Timed out" in text or "timeout" in text.lower():
        return (f"a collective timed out after {timeout_s:g} s (distributed.timeout_s): did the ranks call "
                f"different collectives? ({text}); stopping rank {rank}")
    return f"a collective failed, a peer is probably lost ({text}); stopping rank {rank}"


def _why(reason: int, timeout_s: float | None) -> str:
    if reason == _CLOSED:
        return "its connection closed: the process exited or was killed"
    silence = f"for {timeout_s:g} s" if timeout_s is not None else "within the timeout"
    return f"no heartbeat {silence}: the process is stopped or hung (distributed.timeout_s)"


def reachable_host() -> str:
    """This host's address as the peers reach it: the interface that routes to ``MASTER_ADDR``."""
    master = os.environ.get("MASTER_ADDR")
    if not master or master in ("localhost", "127.0.0.1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((master, 9))  # UDP: no packet is sent, the kernel only picks the route
        return probe.getsockname()[0]


class PeerWatchdog:
    """Heartbeats between every pair of ranks; reports a lost peer through ``on_lost`` (see the module docstring).

    Args:
        timeout_s: a peer silent this long is lost (the configured collective timeout).
        on_lost: called once, from the watchdog thread, with the line to log; in training it ends the process.
        period_s: heartbeat period (None: ``min(1, timeout_s / 10)`` seconds).

    Example (every rank; ``store`` any torch.distributed Store the ranks share):
        >>> watchdog = PeerWatchdog(timeout_s=10.0, on_lost=print)  # doctest: +SKIP
        >>> watchdog.start(store, rank, world_size, host="127.0.0.1")  # doctest: +SKIP
    """

    def __init__(self, timeout_s: float, on_lost: Callable[[str], object], period_s: float | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"distributed.timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.period_s = period_s if period_s is not None else min(1.0, timeout_s / 10)
        self.on_lost = on_lost
        self.rank = -1
        self.departed: set[int] = set()  # peers that said goodbye
        self.interrupted: set[int] = set()  # peers stopped by Ctrl-C (SIGINT)
        self.lost: str | None = None  # the line of the first lost peer
        self._sockets: dict[int, socket.socket] = {}
        self._stop = threading.Event()
        self._failed = False
        self._thread: threading.Thread | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()  # close() wakes the thread's select

    # ---- public ------------------------------------------------------------------------------
    def start(self, store: dist.Store, rank: int, world_size: int, host: str) -> None:
        """Connect to every peer (every rank calls this) and start the watchdog thread.

        Args:
            store: a store all ranks share (addresses are exchanged under ``watchdog/``).
            rank: this rank.
            world_size: number of ranks.
            host: this host's address as the peers reach it.
        """
        self.rank = rank
        key = run_key(store, rank)
        listener = socket.create_server((host, 0), backlog=max(world_size, 1))  # only where the peers reach it
        store.set(f"watchdog/{rank}", f"{host}:{listener.getsockname()[1]}")
        for peer in range(rank):  # connect to lower ranks, accept the higher ones
            address = store.get(f"watchdog/{peer}").decode()
            peer_host, port = address.rsplit(":", 1)
            conn = socket.create_connection((peer_host, int(port)), timeout=self.timeout_s)
            conn.sendall(_FRAME.pack(_HELLO, rank, 0) + hello_mac(key, rank, peer))
            self._sockets[peer] = conn
        deadline = time.monotonic() + self.timeout_s
        while len(self._sockets) < world_size - 1:
            listener.settimeout(max(deadline - time.monotonic(), 0.001))
            conn, source = listener.accept()
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                frame = self._read_exactly(conn, _FRAME.size + _MAC_SIZE)
            except (ConnectionError, OSError):
                frame = b""
            kind, peer, _ = _FRAME.unpack(frame[:_FRAME.size]) if frame else (-1, -1, -1)
            good = (kind == _HELLO and rank < peer < world_size and peer not in self._sockets
                    and hmac.compare_digest(frame[_FRAME.size:], hello_mac(key, peer, rank)))
            if not good:  # not a rank of this run (a port scan, another run): never trusted
                log.warning("watchdog of rank %d: refused a connection from %s that did not prove it belongs to "
                            "the run", rank, source[0])
                conn.close()
                continue
            self._sockets[peer] = conn
        listener.close()
        for conn in self._sockets.values():
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.period_s)  # bounds a send to a peer whose buffer is full (stopped)
        self._thread = threading.Thread(target=self._run, daemon=True, name="recframe-watchdog")
        self._thread.start()
        atexit.register(self.close)
        os.register_at_fork(after_in_child=self._in_forked_child)

    def _in_forked_child(self) -> None:
        """A forked child (a DataLoader worker) drops its copies of the connections (closing a copy sends
        nothing): they must close when this rank dies, not when its last worker notices and exits."""
        self._stop.set()
        for conn in [*self._sockets.values(), self._wake_reader, self._wake_writer]:
            conn.close()

    def mark_failed(self) -> None:
        """This rank leaves through an error: no goodbye, so its peers stop when it exits."""
        self._failed = True

    def interrupted_here(self) -> None:
        """This rank got Ctrl-C: tell the peers (they stop without calling it lost) and stop watching."""
        self._failed = True
        self._send(self._live(), _INTERRUPTED)
        self.close()

    def close(self) -> None:
        """Say goodbye (unless ``mark_failed`` was called) and stop the thread; runs at exit."""
        self._stop.set()
        try:
            self._wake_writer.send(b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.period_s + 1.0)

    def explain(self, error: BaseException, wait_s: float) -> str:
        """The line for a collective that failed with ``error``, naming the lost rank if known.

        Waits up to ``wait_s`` for the watchdog to learn what happened (a dead peer's connections
        close at the same moment; the thread sees it within milliseconds).
        """
        deadline = time.monotonic() + wait_s
        while self.lost is None and not self.departed and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.lost is not None:
            return self.lost
        if self.interrupted:
            return f"rank {min(self.interrupted)} was interrupted (Ctrl-C); stopping rank {self.rank}"
        if self.departed:
            return (f"rank {min(self.departed)} lost (it finished and exited while rank {self.rank} still waited "
                    f"for it in a collective: did the ranks run different numbers of steps?); stopping rank "
                    f"{self.rank}")
        return describe_failure(error, self.rank, self.timeout_s) + " (every peer's heartbeat is alive)"

    # ---- the thread --------------------------------------------------------------------------
    @staticmethod
    def _read_exactly(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("a peer closed its watchdog connection during the handshake")
            data += chunk
        return data

    def _send(self, peers: list[int], kind: int, rank: int = -1, reason: int = -1) -> None:
        frame = _FRAME.pack(kind, rank, reason)
        for peer in peers:
            try:
                self._sockets[peer].sendall(frame)
            except OSError:
                pass  # gone or not reading: the receiving side reports it

    def _live(self) -> list[int]:
        return [p for p in self._sockets if p not in self.departed]

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for peer, conn in self._sockets.items():
            selector.register(conn, selectors.EVENT_READ, peer)
        selector.register(self._wake_reader, selectors.EVENT_READ, None)
        pending = {peer: b"" for peer in self._sockets}
        last_seen = {peer: time.monotonic() for peer in self._sockets}
        next_beat = 0.0
        while not self._stop.is_set() and self.lost is None:
            now = time.monotonic()
            if now >= next_beat:
                self._send(self._live(), _HEARTBEAT)
                next_beat = now + self.period_s
            wake = min([next_beat, *(last_seen[p] + self.timeout_s for p in self._live())])
            for key, _ in selector.select(timeout=max(0.0, wake - time.monotonic()) + 0.01):
                peer = key.data
                if peer is None:  # close(): leave now
                    break
                try:
                    data = key.fileobj.recv(4096)
                except (BlockingIOError, TimeoutError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the peer's end closed
                    selector.unregister(key.fileobj)
                    if peer not in self.departed:
                        self._lose(peer, _CLOSED, reporter=None)
                    continue
                last_seen[peer] = time.monotonic()
                pending[peer] += data
                while len(pending[peer]) >= _FRAME.size and self.lost is None:
                    kind, rank, reason = _FRAME.unpack(pending[peer][:_FRAME.size])
                    pending[peer] = pending[peer][_FRAME.size:]
                    if kind in (_GOODBYE, _INTERRUPTED):
                        self.departed.add(peer)
                        if kind == _INTERRUPTED:
                            self.interrupted.add(peer)
                    elif kind == _LOST:
                        self._lose(rank, reason, reporter=peer)
            now = time.monotonic()
            for peer in self._live():
                if self.lost is None and now - last_seen[peer] > self.timeout_s:
                    self._lose(peer, _SILENT, reporter=None)
        if not self._failed and self.lost is None:
            self._send(self._live(), _GOODBYE)
        selector.close()
        for conn in [*self._sockets.values(), self._wake_reader, self._wake_writer]:
            conn.close()

    def _lose(self, peer: int, reason: int, reporter: int | None) -> None:
        via = f"; reported by rank {reporter}" if reporter is not None else ""
        why = _why(reason, self.timeout_s if reporter is None else None)  # the reporter's timeout may differ
        self.lost = f"rank {peer} lost ({why}{via}); stopping rank {self.rank}"
        if reporter is None:  # tell the others which rank failed first, so they all name it
            self.departed.add(peer)
            self._send(self._live(), _LOST, peer, reason)
        self.on_lost(self.lost)


_running: PeerWatchdog | None = None


def start_watchdog(timeout_s: float, on_lost: Callable[[str], object], single_node: bool = False) -> PeerWatchdog:
    """Start the process's watchdog once, over the default group's store; later calls return it.

    Every rank must call it (each connects to the others), after the default group is up.

    Args:
        timeout_s: a peer silent this long is lost (the configured collective timeout).
        on_lost: called with the line to log when a peer is lost; must end the process.
        single_node: every rank runs on this machine: listen on 127.0.0.1 only.
    """
    global _running
    if _running is None:
        watchdog = PeerWatchdog(timeout_s, on_lost)
        store = dist.PrefixStore("recframe/", dist.distributed_c10d._get_default_store())
        try:
            host = LOOPBACK if single_node else reachable_host()
            watchdog.start(store, dist.get_rank(), dist.get_world_size(), host)
        except OSError as error:
            raise RuntimeError(f"the peer watchdog could not connect rank {dist.get_rank()} to its peers ({error}); "
                               "distributed.watchdog=false runs without it") from error
        _running = watchdog
    return _running

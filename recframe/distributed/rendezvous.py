"""The rendezvous of a run's processes, listening on loopback only when they share one machine, and the run's key.

torch's ``TCPStore`` (the store the ranks meet through, on rank 0, ``MASTER_PORT``) listens on every
interface, IPv4 and IPv6; gloo's pair connections bind where the hostname resolves. On one machine
nothing of a run needs to be reachable from elsewhere, so :func:`run_store` binds the store's socket
to ``127.0.0.1`` itself (``master_listen_fd``), and :func:`loopback_interface` names the loopback
interface for gloo (``GLOO_SOCKET_IFNAME``). Across machines the store listens on the configured
``MASTER_ADDR`` only. The watchdog (``recframe.distributed.watchdog``) binds the same way, and its
peers prove they belong to the run with :func:`hello_mac` under :func:`run_key`.

Example:
    >>> from datetime import timedelta
    >>> store = run_store(rank=0, world_size=1, address="127.0.0.1", port=0, single_node=True,
    ...                   timeout=timedelta(seconds=5))
    >>> store.set("k", "v"); store.get("k")
    b'v'
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from datetime import timedelta

import torch.distributed as dist

LOOPBACK = "127.0.0.1"
TOKEN_ENV = "RECFRAME_RUN_TOKEN"  # an optional secret shared by every rank (multi-node runs)


def loopback_interface() -> str | None:
    """The name of this machine's loopback interface (``lo`` on Linux, ``lo0`` on macOS), None if unknown.

    Example:
        >>> loopback_interface() in ("lo", "lo0", None)
        True
    """
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in ("lo", "lo0") if name in names), None)


def bind_address(address: str, single_node: bool) -> str:
    """Where a run's listening sockets bind: loopback on one machine, else ``address`` (MASTER_ADDR) resolved.

    Args:
        address: the configured main address (``MASTER_ADDR``).
        single_node: every rank runs on this machine.

    Example:
        >>> bind_address("10.1.2.3", single_node=True), bind_address("127.0.0.1", single_node=False)
        ('127.0.0.1', '127.0.0.1')
    """
    if single_node:
        return LOOPBACK
    return socket.gethostbyname(address)


def run_store(rank: int, world_size: int, address: str, port: int, single_node: bool,
              timeout: timedelta) -> dist.TCPStore:
    """The run's TCPStore: rank 0 serves it on a socket bound to :func:`bind_address`, the others connect.

    Args:
        rank: this process's global rank.
        world_size: number of ranks.
        address: the configured main address (``MASTER_ADDR``; on one machine the ranks use loopback).
        port: the main port (``MASTER_PORT``; 0 picks a free one, for one process).
        single_node: every rank runs on this machine.
        timeout: how long to wait for the other ranks.
    """
    host = bind_address(address, single_node)
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, timeout)
    listener = socket.create_server((host, port), backlog=max(64, world_size))
    port = listener.getsockname()[1]
    return dist.TCPStore(host, port, world_size, True, timeout, wait_for_workers=False,
                         master_listen_fd=listener.detach())


def run_key(store: dist.Store, rank: int) -> bytes:
    """The run's key for the watchdog handshake: rank 0's random nonce (shared through ``store``) and the
    ``RECFRAME_RUN_TOKEN`` environment variable.

    Args:
        store: the store the ranks share.
        rank: this rank (rank 0 makes the nonce).

    Example:
        >>> store = dist.HashStore()
        >>> key = run_key(store, 0)
        >>> key == run_key(store, 1), len(key)
        (True, 32)
    """
    if rank == 0:
        store.set("watchdog/nonce", secrets.token_hex(16))
    nonce = store.get("watchdog/nonce")
    return hashlib.sha256(nonce + os.environ.get(TOKEN_ENV, "").encode()).digest()


def hello_mac(key: bytes, sender: int, receiver: int) -> bytes:
    """The proof a HELLO from ``sender`` to ``receiver`` carries: HMAC-SHA256 of the pair under the run's key.

    Example:
        >>> len(hello_mac(b"k", 1, 0)), hello_mac(b"k", 1, 0) == hello_mac(b"other run", 1, 0)
        (32, False)
    """
    return hmac.new(key, f"recframe-watchdog hello {sender}->{receiver}".encode(), hashlib.sha256).digest()

"""One rank of the watchdog tests (no process group, no Lightning): ``python -m tests.distributed.watchdog_worker``.

Arguments: ``RANK WORLD DIR TIMEOUT_S SCENARIO`` (``TIMEOUT_S``: one for all, or one per rank
separated by commas). The ranks meet through a FileStore in DIR, start
a PeerWatchdog whose ``on_lost`` is the real ``exit_now`` (log the line, exit 1), write
``DIR/ready_<rank>`` and then, by scenario:

- ``wait``: sleep (until killed, stopped, or a lost peer ends the process);
- ``finish_at_rank_seconds``: rank r runs ``r * 3 * TIMEOUT_S`` seconds, then exits normally (0);
- ``fail_rank0``: rank 0 marks itself failed and exits with 3 at once; the others wait;
- ``fork``: like ``wait``, but every rank first forks a child that sleeps (as a DataLoader worker
  would, it inherits the rank's sockets) and writes ``DIR/child_<rank>`` with its pid.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import torch.distributed as dist

from recframe.distributed.watchdog import PeerWatchdog, exit_now


def main() -> None:
    rank, world, directory, scenario = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[5]
    timeouts = [float(t) for t in sys.argv[4].split(",")]
    timeout_s = timeouts[rank] if len(timeouts) > 1 else timeouts[0]
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s")
    store = dist.FileStore(os.path.join(directory, "store"), world)
    watchdog = PeerWatchdog(timeout_s, on_lost=exit_now)
    watchdog.start(store, rank, world, host="127.0.0.1")
    open(os.path.join(directory, f"ready_{rank}"), "w").close()
    if scenario == "finish_at_rank_seconds":
        time.sleep(rank * 3 * timeout_s)
        print(f"rank {rank} done", flush=True)
        return
    if scenario == "fork":
        child = os.fork()
        if child == 0:
            time.sleep(600)
            os._exit(0)
        with open(os.path.join(directory, f"child_{rank}"), "w") as f:
            f.write(str(child))
    if scenario == "fail_rank0" and rank == 0:
        # Fail only once every rank is ready: failing earlier can stop a rank between its watchdog's start
        # and its ready file, and the test would wait for that file in vain (seen on a busy 2-core machine).
        while not all(os.path.exists(os.path.join(directory, f"ready_{r}")) for r in range(world)):
            time.sleep(0.01)
        watchdog.mark_failed()
        sys.exit(3)
    time.sleep(600)


if __name__ == "__main__":
    main()

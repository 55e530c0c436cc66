"""How long a CPU thread spins before it sleeps while it waits for the others (OpenMP), set before torch loads.

torch's CPU kernels and MKL run their parallel regions on a GNU OpenMP (libgomp) thread pool. A thread that
finishes its share of a region first spins up to ``GOMP_SPINCOUNT`` iterations (libgomp's default: 300,000,
milliseconds) before it sleeps. When the pool has the cores to itself that is the quickest wait. When anything
else runs on those cores (another job, a second training process, an editor's indexer), the spinning thread
burns the time slice its late partner needs, each of the step's thousands of regions lasts a scheduler slice,
and the step slows down: ``recframe bench +experiment=dlrm`` on a 2-core VM ran 210-236 ms a step with
libgomp's default beside one busy process (142-143 ms with this module's short spin) and 1.8-3.5 s beside
several (~0.21 s), against 80-99 ms alone (BENCHMARKS.md, "OpenMP waits").
The ``recframe`` command therefore sets a short spin (``DEFAULT_SPINCOUNT``) unless the environment
already chooses (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` set: left alone). libgomp reads the variable once,
when torch loads it, so the command sets it before anything imports torch; the ranks it starts inherit it.

Example:
    >>> env = {}
    >>> set_default_spin(env), env
    (True, {'GOMP_SPINCOUNT': '1000'})
    >>> set_default_spin({"OMP_WAIT_POLICY": "ACTIVE"})  # the user's choice stays
    False
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Spin iterations before a waiting thread sleeps (BENCHMARKS.md, "OpenMP waits", measured on the 2-core VM).
DEFAULT_SPINCOUNT = 1000
SPIN_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def set_default_spin(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT`` to ``DEFAULT_SPINCOUNT`` where neither it nor ``OMP_WAIT_POLICY`` is set.

    Must run before torch is imported in this process (libgomp reads it when it loads); a child process gets it
    through its environment.

    Args:
        environ: the environment to change (default: ``os.environ``).

    Returns:
        Whether it was set (False: the environment had chosen).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in SPIN_VARIABLES):
        return False
    env["GOMP_SPINCOUNT"] = str(DEFAULT_SPINCOUNT)
    return True


def describe(environ: MutableMapping[str, str] | None = None) -> str:
    """The OpenMP wait in force, for a log line.

    Args:
        environ: the environment to read (default: ``os.environ``).

    Example:
        >>> describe({"GOMP_SPINCOUNT": "2000"}), describe({})
        ('GOMP_SPINCOUNT=2000', "libgomp's default (GOMP_SPINCOUNT=300000)")
    """
    env = os.environ if environ is None else environ
    chosen = [f"{name}={env[name]}" for name in SPIN_VARIABLES if name in env]
    return " ".join(chosen) if chosen else "libgomp's default (GOMP_SPINCOUNT=300000)"

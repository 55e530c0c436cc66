"""The `recframe` command line: help, dispatch, lazy imports, every command resolves."""

import subprocess
import sys

from recframe import cli


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recframe", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand_with_one_line() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("train", "eval", "plan", "preprocess", "bench"):
        lines = [line for line in result.stdout.splitlines() if line.strip().startswith(name + " ")]
        assert len(lines) == 1, f"{name} should have exactly one help line:\n{result.stdout}"


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, io, contextlib; from recframe import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()): cli.main(['--help'])\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'hydra', 'fbgemm_gpu') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"--help imported {result.stdout.strip()}"


def test_every_landed_command_entry_resolves() -> None:
    import importlib

    for name, command in cli.COMMANDS.items():
        module, function = command.entry.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def _spin_seen_by_a_command(env_extra: dict[str, str]) -> str:
    """What a dispatched command sees in GOMP_SPINCOUNT / OMP_WAIT_POLICY, and whether torch was loaded before."""
    code = (
        "import os, sys\n"
        "from recframe import cli\n"
        "def probe(args):\n"
        "    print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
        "sys.modules['probe_mod'] = type(sys)('probe_mod'); sys.modules['probe_mod'].probe = probe\n"
        "cli.COMMANDS['probe'] = cli.Command('probe', 'probe_mod:probe', hydra=True)\n"
        "cli.main(['probe'])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**env, **env_extra})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_command_sets_a_short_openmp_spin_before_torch_loads() -> None:
    from recframe.openmp_wait import DEFAULT_SPINCOUNT

    assert _spin_seen_by_a_command({}) == f"{DEFAULT_SPINCOUNT} None False"


def test_the_users_openmp_wait_stays() -> None:
    assert _spin_seen_by_a_command({"GOMP_SPINCOUNT": "300000"}) == "300000 None False"
    assert _spin_seen_by_a_command({"OMP_WAIT_POLICY": "ACTIVE"}) == "None ACTIVE False"

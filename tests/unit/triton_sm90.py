"""Record the Triton kernels' launches under the interpreter, then compile each for an H100/H200 (sm_90) on the CPU.

Triton's interpreter (``TRITON_INTERPRET=1``, the CPU test tier) runs a kernel's Python body with numpy: it never
lowers the kernel, so a kernel that the GPU compiler rejects (a type it cannot unify, an op it does not lower, a
constexpr branch only one dtype takes) passes every interpreter test and fails on the first GPU step. Triton's
compiler itself needs no GPU: given a target it emits PTX and runs its bundled ``ptxas`` to a cubin. So the tests
record each launch's argument types and constexpr values (:func:`record_launches`), and :func:`compile_for_sm90`
compiles every distinct one in a fresh process without the interpreter (where ``@triton.jit`` makes real
``JITFunction`` objects).

Example:
    >>> specs = []  # doctest: +SKIP
    >>> with record_launches(specs):  # doctest: +SKIP
    ...     run_some_kernels()
    >>> compile_for_sm90(specs)  # doctest: +SKIP
    []
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
POINTER_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64",
                 torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8", torch.bool: "i1"}


@dataclass(frozen=True)
class LaunchSpec:
    """One kernel specialization: what the GPU compiler needs to build it.

    Args:
        module: the kernel's module.
        name: the kernel's name in it.
        signature: ``(parameter, triton type)`` for every parameter, ``"constexpr"`` for the constexpr ones.
        constexprs: ``(parameter, value)``; a ``tl.dtype`` value as ``"tl.<name>"``.
        options: the launch's compile options (``num_warps`` ...).
    """

    module: str
    name: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, int], ...]

    def label(self) -> str:
        """``module.name`` and its constexprs, for failure messages."""
        return f"{self.module}.{self.name}{dict(self.constexprs)} {dict(self.signature)}"


def _scalar_type(value: object) -> str:
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for {type(value).__name__} argument {value!r}")


def _constexpr_value(value: object) -> object:
    import triton.language as tl

    return f"tl.{value.name}" if isinstance(value, tl.dtype) else value


def spec_of(fn: object, args: tuple, kwargs: dict) -> LaunchSpec:
    """The :class:`LaunchSpec` of the Python kernel ``fn`` called with ``args`` and ``kwargs``.

    Args:
        fn: the kernel's Python function (the interpreter's ``InterpretedFunction.fn``).
        args: the launch's positional arguments.
        kwargs: its keyword arguments, launch options included.
    """
    options = tuple(sorted((k, kwargs.pop(k)) for k in LAUNCH_OPTIONS if k in kwargs))
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    signature, constexprs = [], []
    for name, param in inspect.signature(fn).parameters.items():
        value = bound.arguments[name]
        if "constexpr" in str(param.annotation) or value is None:
            signature.append((name, "constexpr"))
            constexprs.append((name, _constexpr_value(value)))
        elif isinstance(value, torch.Tensor):
            signature.append((name, "*" + POINTER_TYPES[value.dtype]))
        else:
            signature.append((name, _scalar_type(value)))
    return LaunchSpec(fn.__module__, fn.__name__, tuple(signature), tuple(constexprs), options)


@contextlib.contextmanager
def record_launches(specs: list[LaunchSpec]) -> Iterator[None]:
    """Append the :class:`LaunchSpec` of every interpreted kernel launch inside the block to ``specs``.

    Args:
        specs: where the launches go (duplicates included).
    """
    from triton.runtime.interpreter import InterpretedFunction

    original = InterpretedFunction.run

    def run(self: InterpretedFunction, *args: object, grid: object, warmup: bool, **kwargs: object) -> object:
        specs.append(spec_of(self.fn, args, dict(kwargs)))
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run
    try:
        yield
    finally:
        InterpretedFunction.run = original


def compile_for_sm90(specs: list[LaunchSpec]) -> list[str]:
    """Compile every distinct spec for ``cuda`` capability 90 in a fresh process without the interpreter.

    Args:
        specs: the launches (duplicates are compiled once).

    Returns:
        One line per spec that failed to compile: its label and the compiler's last error line.
    """
    unique = sorted(set(specs), key=lambda s: s.label())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    payload = json.dumps([[s.module, s.name, s.signature, s.constexprs, s.options] for s in unique])
    done = subprocess.run([sys.executable, "-m", "tests.unit.triton_sm90"], input=payload, env=env, text=True,
                          capture_output=True, timeout=900, check=False)
    if done.returncode != 0:
        return [f"the compiling process failed: {done.stderr[-2000:]}"]
    return json.loads(done.stdout)


def _compile(module: str, name: str, signature: list, constexprs: list, options: list) -> None:
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    values = {k: tl.dtype(v[3:]) if isinstance(v, str) and v.startswith("tl.") else v for k, v in constexprs}
    fn = getattr(importlib.import_module(module), name)
    source = ASTSource(fn=fn, signature=dict(signature), constexprs=values)
    triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(options))


def main() -> None:
    """Read the specs (JSON) on stdin; print the failures (JSON list of strings)."""
    failures = []
    for module, name, signature, constexprs, options in json.loads(sys.stdin.read()):
        try:
            _compile(module, name, signature, constexprs, options)
        except Exception as error:  # noqa: BLE001 (every failure is reported, with its spec)
            last = str(error).strip().splitlines()[-1:] or [type(error).__name__]
            failures.append(f"{module}.{name}{dict(constexprs)}: {type(error).__name__}: {last[0][:300]}")
    print(json.dumps(failures))


if __name__ == "__main__":
    main()

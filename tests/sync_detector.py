"""Find host reads of tensor data on CPU: the operations that would stall the pipeline on a GPU.

On a GPU, reading a tensor's data on the host (``.item()``, ``.tolist()``, ``int(t)``, ``if t:``,
``.numpy()``, ``.cpu()``) waits for every queued kernel: a device-to-host synchronization. Ops whose
output size depends on the data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``,
``repeat_interleave`` without ``output_size``, ...) sync for the same reason: the host must know
the size to allocate the output. ``HostReadDetector`` records both kinds while code runs on CPU,
each with the Python stack of where it happened, so a test can assert that a training step has
none (``torch.cuda.set_sync_debug_mode`` does the same on a real GPU, where we rarely are).

How: a ``TorchDispatchMode`` sees every aten op (also those called by C++ and in the backward),
so it catches ``aten._local_scalar_dense`` (what ``.item()``, ``int()``, ``float()``, ``bool()``
and C++-internal ``item()`` calls become) and the data-dependent ops by name; a
``TorchFunctionMode`` catches the reads that copy memory without dispatching an op
(``tolist``, ``numpy``, ``__array__``, ``cpu``), and tensors made from Python data for a device
(``torch.tensor(data, device=...)``: on a GPU a blocking host-to-device copy). Not reported:

- the launches of Triton's CPU interpreter (it copies the arguments to numpy; a GPU launch passes
  pointers);
- reads of tensors that ``is_host`` says stay on the host in a GPU run too (torch.optim keeps the
  ``step`` counters of non-fused optimizers on the CPU, for instance).

What it cannot see: reads inside C++ kernels that differ between CPU and CUDA (a CUDA kernel
calling ``.item()`` where the CPU kernel reads memory directly), unless the op is listed here.

Example:
    >>> import torch
    >>> x = torch.arange(4)
    >>> with HostReadDetector() as detector:
    ...     _ = x[x > 1]           # boolean mask: data-dependent size
    ...     _ = int(x.sum())       # a value read on the host
    >>> [read.what for read in detector.reads]
    ['aten.index.Tensor with a boolean mask', 'aten._local_scalar_dense (item/int/float/bool of a tensor)']
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# aten ops whose output size (or result) depends on the data: the host waits for the device.
DATA_DEPENDENT_OPS = {
    aten.nonzero.default: "aten.nonzero (data-dependent size)",
    aten.masked_select.default: "aten.masked_select (data-dependent size)",
    aten._unique.default: "aten._unique (data-dependent size)",
    aten._unique2.default: "aten._unique2 (torch.unique: data-dependent size)",
    aten.unique_dim.default: "aten.unique_dim (data-dependent size)",
    aten.unique_consecutive.default: "aten.unique_consecutive (data-dependent size)",
    aten.unique_dim_consecutive.default: "aten.unique_dim_consecutive (data-dependent size)",
    aten.bincount.default: "aten.bincount (its size is the largest value + 1)",
    aten.equal.default: "aten.equal (returns a Python bool)",
    aten._local_scalar_dense.default: "aten._local_scalar_dense (item/int/float/bool of a tensor)",
    aten.coalesce.default: "aten.coalesce (data-dependent nnz)",
    aten._validate_sparse_csr_tensor_args.default: "sparse CSR invariants checked on the host",
    aten._validate_sparse_compressed_tensor_args.default: "sparse compressed invariants checked on the host",
}
# Indexing ops: data-dependent when an index is a boolean mask.
MASKABLE_OPS = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
# Python-level reads that copy memory to the host without dispatching an aten op on a CPU tensor.
HOST_COPY_METHODS = {
    torch.Tensor.tolist: "Tensor.tolist",
    torch.Tensor.numpy: "Tensor.numpy",
    torch.Tensor.__array__: "Tensor.__array__",
    torch.Tensor.cpu: "Tensor.cpu (a device-to-host copy on a GPU)",
}

# Tensors made from Python data on the step's device: on a GPU, a blocking copy from pageable host memory.
HOST_DATA_FACTORIES = {
    torch.tensor: "torch.tensor(data, device=...) (a blocking host-to-device copy on a GPU)",
    torch.as_tensor: "torch.as_tensor(data, device=...) (a blocking host-to-device copy on a GPU)",
}


@dataclass(frozen=True)
class HostRead:
    """One host read: what it was and the Python stack where it happened (innermost frame last)."""

    what: str
    stack: traceback.StackSummary

    @property
    def where(self) -> str:
        """``file:line in function`` of the innermost frame outside torch, triton and this detector."""
        for frame in reversed(self.stack):
            if not _is_library_frame(frame.filename):
                return f"{frame.filename}:{frame.lineno} in {frame.name}"
        frame = self.stack[-1]
        return f"{frame.filename}:{frame.lineno} in {frame.name}"

    def __str__(self) -> str:
        return f"{self.what} at {self.where}"


def _package_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    return os.path.dirname(file) + os.sep if file else None


def _is_library_frame(filename: str) -> bool:
    dirs = [d for d in (_package_dir("torch"), _package_dir("triton")) if d]
    return filename == __file__ or any(filename.startswith(d) for d in dirs)


def _in_triton_interpreter(stack: traceback.StackSummary) -> bool:
    """Whether Triton's CPU interpreter is running a launch (it copies tensors to numpy)."""
    triton_dir = _package_dir("triton")
    return triton_dir is not None and any(f.filename.startswith(triton_dir) for f in stack)


def _has_bool_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _what(func: Any, args: tuple, kwargs: dict) -> str | None:
    """Why this aten call reads device data on the host, or None."""
    if func in DATA_DEPENDENT_OPS:
        return DATA_DEPENDENT_OPS[func]
    if func.overloadpacket in MASKABLE_OPS and _has_bool_index(args[1] if len(args) > 1 else kwargs.get("indices")):
        return f"aten.{func.overloadpacket.__name__}.{func._overloadname} with a boolean mask"
    if func.overloadpacket is aten.repeat_interleave and func._overloadname.startswith(("Tensor", "self_Tensor")):
        if kwargs.get("output_size") is None:  # (keyword-only in both overloads)
            return f"aten.repeat_interleave.{func._overloadname} without output_size (data-dependent size)"
    return None


class _DispatchWatch(TorchDispatchMode):
    def __init__(self, detector: HostReadDetector) -> None:
        super().__init__()
        self.detector = detector

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        what = _what(func, args, kwargs)
        if what is not None:
            self.detector._record(what, args)
        return func(*args, **kwargs)


class _FunctionWatch(TorchFunctionMode):
    def __init__(self, detector: HostReadDetector) -> None:
        super().__init__()
        self.detector = detector

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        what = HOST_COPY_METHODS.get(func)
        if what is None and func in HOST_DATA_FACTORIES and kwargs.get("device") is not None:
            what = HOST_DATA_FACTORIES[func]
        if what is not None:
            self.detector._record(what, args)
        return func(*args, **kwargs)


class HostReadDetector:
    """A context manager that records every host read of tensor data inside it (module docstring).

    Args:
        is_host: tells the tensors that stay on the host in a GPU run too; reads of them are not recorded.

    Attributes:
        reads: the ``HostRead`` records, in order.
    """

    def __init__(self, is_host: Callable[[torch.Tensor], bool] = lambda t: False) -> None:
        self.is_host = is_host
        self.reads: list[HostRead] = []
        self._modes: list[Any] = []

    def __enter__(self) -> HostReadDetector:
        self._modes = [_FunctionWatch(self), _DispatchWatch(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        self._modes = []

    def _record(self, what: str, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor) and self.is_host(args[0]):
            return
        stack = traceback.extract_stack()[:-2]
        if not _in_triton_interpreter(stack):
            self.reads.append(HostRead(what, stack))

    def report(self) -> str:
        """One line per read (what and where), or ``no host reads``."""
        return "\n".join(str(read) for read in self.reads) or "no host reads"

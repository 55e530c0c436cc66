"""Embedding table throughput: forward + backward + fused update, recframe backends vs plain PyTorch.

Two ways to pick the workloads:

- a grid (default): ``--tables`` tables (26) of ``--rows`` rows (100,000), one feature each, dims
  64 and 128, 1 and 20 ids per feature, batch 2048 and 16384;
- ``--shapes``: the four shapes of ``../shared/bench/tbe_gpu.py`` (issue 9): ``S`` (26 x 100k x 64,
  batch 2048, 1 id), ``M1`` (26 x 1M x 128, batch 16384, 1 id), ``M20`` (the same with 20 ids) and
  ``MLPerf4M`` (the MLPerf DLRM-DCNv2 tables capped at 4M rows, dim 128, batch 8192, its multi-hot
  sizes: 214 ids per sample).

Backends (``--backend``, several allowed):

- ``fbgemm``: recframe EmbeddingBagCollection on fbgemm's TBE (where fbgemm supports the optimizer here);
- ``triton``: recframe EmbeddingBagCollection on the triton kernels (CUDA);
- ``torch``: recframe EmbeddingBagCollection on the torch backend;
- ``nn``: one ``nn.EmbeddingBag(mode="sum", sparse=True)`` per table + ``torch.optim.Adagrad`` on the
  sparse gradients (step + zero_grad), the plain-PyTorch way;
- ``probe``: the plain-torch rowwise Adagrad of ``../shared/bench/tbe_gpu.py`` (its ``torch_unique``:
  ``F.embedding_bag`` over ids already offset into one stacked table, then ``unique`` + ``index_add``
  for the update, no autograd), issue 9's "plain torch", timed beside the others in one process;
- ``probe-autograd``: the same ops behind ``torch.autograd.Function`` (forward: the lookup;
  backward: the update), stepped with ``backward()`` as the recframe collections are: plain torch
  in the scope of ``triton``;
- ``triton-direct``: recframe's triton kernels called as the probe calls its ops: the group's
  input preparation, the lookup and the fused update, without autograd (``backward`` has a fixed
  cost of its own, ~75 us on the H200 machine's host, that a training step pays once for the whole
  model). Needs tables of one dim and pooling (one kernel group).

The default optimizer is ``adagrad`` (exact, per element), the same math as the ``nn`` baseline
(eps 1e-8 for all); issue 9's numbers use ``--optimizer rowwise_adagrad``. A step is: forward of a
fixed batch (a KeyedJaggedTensor for recframe; ids are not range-checked unless ``--check-ids``,
which costs a host sync per step, as the fbgemm probe has none), ``backward`` of a fixed random
output gradient, and the update. On CPU each step is timed alone and the median reported; on CUDA
``--steps`` back-to-back steps are timed with CUDA events and the mean reported (as the probe);
with ``--interleave`` every backend of a shape is built first and blocks of ``--steps`` steps are
timed round-robin, ``--rounds`` times, and the median block reported (the host of a GPU machine is
shared too: a host-bound shape moves by 1.5x between runs).
Reported: ms per step, lookups/s (ids per step / time) and effective GB/s = bytes a perfect kernel
would move per step / time, with bytes = lookups * dim * w (read rows) + bags * dim * 4 (write
output) + bags * dim * 4 (read the output gradient) + lookups * dim * w * 2 (read and write rows)
+ the optimizer state read and written per lookup (adagrad: dim floats, rowwise_adagrad: one float,
sgd: none), where w is the bytes of one weight (4 for fp32, 2 for fp16/bf16). Configs whose
estimated memory exceeds ``--max-gb`` are listed as skipped.

On a CPU shared with other jobs, ``--threads 1`` gives far steadier numbers: with every core busy,
torch's multi-threaded ops wait on descheduled threads (measured here: 10-30x slower steps).

    python scripts/bench_embedding.py                      # CPU (+ CUDA if present), the grid
    python scripts/bench_embedding.py --devices cuda --shapes S M1 M20 MLPerf4M --optimizer rowwise_adagrad \\
        --backend triton torch --weight-dtypes fp32 bf16 --max-gb 60
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels.select import BACKENDS
from recframe.sparse import KeyedJaggedTensor

STATE_FLOATS = {"sgd": lambda dim: 0, "adagrad": lambda dim: dim, "rowwise_adagrad": lambda dim: 1}
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
MLPERF_ROWS = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209, 11938,
               155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]
MLPERF_HOTS = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]


@dataclass(frozen=True)
class Shape:
    """One workload: rows and ids per sample of each table (one feature each), the dim and the batch."""

    name: str
    rows: tuple[int, ...]
    hots: tuple[int, ...]
    dim: int
    batch: int


SHAPES = {
    "S": Shape("S", (100_000,) * 26, (1,) * 26, 64, 2048),
    "M1": Shape("M1", (1_000_000,) * 26, (1,) * 26, 128, 16384),
    "M20": Shape("M20", (1_000_000,) * 26, (20,) * 26, 128, 16384),
    "MLPerf4M": Shape("MLPerf4M", tuple(min(r, 4_000_000) for r in MLPERF_ROWS), tuple(MLPERF_HOTS), 128, 8192),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per table (grid)")
    parser.add_argument("--tables", type=int, default=26, help="number of tables, one feature each (grid)")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128], help="embedding dims (grid)")
    parser.add_argument("--ids", type=int, nargs="+", default=[1, 20], help="ids per feature per sample (grid)")
    parser.add_argument("--batches", type=int, nargs="+", default=[2048, 16384], help="batch sizes (grid)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=None,
                        help="issue 9's shapes instead of the grid")
    parser.add_argument("--backend", "--backends", dest="backends", nargs="+", default=["fbgemm", "torch", "nn"],
                        choices=[*BACKENDS, "nn", "probe", "probe-autograd", "triton-direct"], help="backends to time")
    parser.add_argument("--optimizer", default="adagrad", choices=sorted(STATE_FLOATS),
                        help="recframe backends' optimizer (nn always uses torch.optim.Adagrad)")
    parser.add_argument("--weight-dtypes", nargs="+", default=["fp32"], choices=list(WEIGHT_BYTES),
                        help="table weight dtypes (recframe backends)")
    parser.add_argument("--check-ids", action="store_true", help="range-check ids (a host sync per step)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 2 on cpu, 20 on cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 1 on cpu, 5 on cuda)")
    parser.add_argument("--interleave", action="store_true",
                        help="build every backend of a shape, then time them round-robin (fair on a busy machine)")
    parser.add_argument("--rounds", type=int, default=7, help="CUDA --interleave: timed blocks per backend")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip configs estimated to need more memory")
    return parser.parse_args()


def make_step(backend: str, device: torch.device, shape: Shape, optimizer: str, weight_dtype: str,
              check_ids: bool) -> Callable[[], None]:
    """Build the module and a fixed batch; return one training step."""
    tables, batch, dim = len(shape.rows), shape.batch, shape.dim
    values = torch.cat([torch.randint(0, rows, (batch * hot,), device=device)
                        for rows, hot in zip(shape.rows, shape.hots, strict=True)])
    lengths = torch.cat([torch.full((batch,), hot, device=device) for hot in shape.hots])
    grad = torch.randn(batch, tables * dim, device=device)
    if backend in ("probe", "probe-autograd"):
        return probe_step(device, shape, values, lengths, autograd=backend == "probe-autograd")
    if backend == "nn":
        embs = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum", sparse=True) for rows in shape.rows).to(device)
        opt = torch.optim.Adagrad(embs.parameters(), lr=0.01, eps=1e-8)
        per_table = values.split([batch * hot for hot in shape.hots])
        offsets = [torch.arange(0, batch * hot, hot, device=device) for hot in shape.hots]

        def nn_step() -> None:
            out = torch.cat([emb(per_table[t], offsets[t]) for t, emb in enumerate(embs)], dim=1)
            out.backward(grad)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return nn_step
    specs = [TableConfig(name=f"t{t}", num_embeddings=rows, embedding_dim=dim, feature_names=[f"f{t}"],
                         weight_dtype=weight_dtype) for t, rows in enumerate(shape.rows)]
    direct = backend == "triton-direct"
    ebc = EmbeddingBagCollection(specs, SparseOptimizer(name=optimizer, lr=0.01),
                                 backend="triton" if direct else backend, device=device, check_ids=check_ids)
    kjt = KeyedJaggedTensor.from_lengths([f"f{t}" for t in range(tables)], values, lengths)
    if direct:
        (kernel,), (prep,) = ebc.kernels, ebc.inputs
        grad_out = grad.contiguous()

        def direct_step() -> None:
            ids, offsets, weights = prep(kjt)
            _, keys, grad_rows, claim = kernel.lookup(ids, offsets, weights, True)
            kernel.apply_gradient(keys, grad_rows, weights, grad_out, claim)

        return direct_step

    def recframe_step() -> None:
        ebc(kjt).values().backward(grad)

    return recframe_step


def probe_step(device: torch.device, shape: Shape, values: torch.Tensor, lengths: torch.Tensor,
               autograd: bool) -> Callable[[], None]:
    """``../shared/bench/tbe_gpu.py``'s ``torch_unique`` step (fwd + exact rowwise Adagrad, lr 0.01, eps 1e-8),
    called directly or (``autograd``) as the forward and backward of an autograd Function."""
    tables, batch, dim = len(shape.rows), shape.batch, shape.dim
    weight = torch.randn(sum(shape.rows), dim, device=device) * 0.01
    state = torch.zeros(sum(shape.rows), device=device)
    grad = torch.randn(tables * batch, dim, device=device)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), lengths.cumsum(0)])
    starts = torch.tensor([0, *torch.tensor(shape.rows).cumsum(0)[:-1].tolist()], device=device)
    rows = values + starts.repeat_interleave(batch).repeat_interleave(lengths)  # ids offset into the stack
    bag = torch.repeat_interleave(torch.arange(tables * batch, device=device), lengths)
    lr, eps = 0.01, 1e-8

    def lookup() -> torch.Tensor:
        return torch.nn.functional.embedding_bag(rows, weight, offsets[:-1], mode="sum")

    def update(grad_out: torch.Tensor) -> None:
        unique, inverse = torch.unique(rows, return_inverse=True)
        summed = torch.zeros(unique.numel(), dim, device=device).index_add_(0, inverse, grad_out[bag])
        new_state = state[unique] + summed.pow(2).mean(1)
        state[unique] = new_state
        weight.index_add_(0, unique, -lr * summed / (new_state.sqrt() + eps).unsqueeze(1))

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, anchor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
            return lookup()

        @staticmethod
        def backward(ctx, grad_out: torch.Tensor) -> None:  # noqa: ANN001
            update(grad_out)

    anchor = torch.empty(0, device=device, requires_grad=True)

    def step() -> None:
        lookup()
        update(grad)

    def autograd_step() -> None:
        Fused.apply(anchor).backward(grad)

    return autograd_step if autograd else step


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step: the median of single timed steps on CPU, the mean of back-to-back steps on CUDA."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / steps
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


PLAIN = ("nn", "probe", "probe-autograd")  # plain-PyTorch baselines: fp32 weights, their own optimizer


def state_floats(backend: str, optimizer: str, dim: int) -> int:
    """Optimizer state floats per looked-up row: nn's Adagrad per element, the probe's rowwise Adagrad one."""
    return {"nn": dim, "probe": 1, "probe-autograd": 1}.get(backend, STATE_FLOATS[optimizer](dim))


def weight_bytes(backend: str, weight_dtype: str) -> int:
    return 4 if backend in PLAIN else WEIGHT_BYTES[weight_dtype]


def estimate_gb(backend: str, shape: Shape, optimizer: str, weight_dtype: str) -> float:
    """Rough peak memory: tables + optimizer state + a few [lookups, dim] fp32 intermediates in backward."""
    state = state_floats(backend, optimizer, shape.dim)
    width = weight_bytes(backend, weight_dtype)
    intermediates = {"fbgemm": 1, "triton": 0.1, "triton-direct": 0.1, "torch": 3, "nn": 3, "probe": 3,
                     "probe-autograd": 3}[backend]
    lookups = shape.batch * sum(shape.hots)
    return (sum(shape.rows) * (shape.dim * width + state * 4) + intermediates * lookups * shape.dim * 4) / 1e9


def grid_shapes(args: argparse.Namespace) -> list[Shape]:
    return [Shape(f"{args.tables}x{args.rows}", (args.rows,) * args.tables, (ids,) * args.tables, dim, batch)
            for dim in args.dims for ids in args.ids for batch in args.batches]


def main() -> None:
    args = parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = [SHAPES[name] for name in args.shapes] if args.shapes else grid_shapes(args)
    card = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    header = (f"{'device':<6} {'shape':<10} {'backend':<14} {'weights':<7} {'dim':>4} {'ids':>4} {'batch':>6} "
              f"{'ms/step':>9} {'Mlookups/s':>11} {'GB/s':>7}")
    print(f"optimizer {args.optimizer} (nn: torch.optim.Adagrad), torch {torch.__version__}{card}, "
          f"{torch.get_num_threads()} CPU threads")
    print(header)
    print("-" * len(header))
    torch.manual_seed(0)
    for device_name in devices:
        device = torch.device(device_name)
        steps = args.steps or (20 if device.type == "cuda" else 2)
        warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
        for shape in shapes:
            runs = []  # (prefix, backend, weight_dtype, step) of every backend that can run this shape
            for backend in args.backends:
                for weight_dtype in args.weight_dtypes if backend not in PLAIN else ["fp32"]:
                    ids = sum(shape.hots) / len(shape.hots)
                    prefix = (f"{device.type:<6} {shape.name:<10} {backend:<14} {weight_dtype:<7} {shape.dim:>4} "
                              f"{ids:>4.3g} {shape.batch:>6}")
                    if backend not in PLAIN:
                        table = TableConfig(name="t", num_embeddings=max(shape.rows), embedding_dim=shape.dim,
                                            feature_names=["f"], weight_dtype=weight_dtype)
                        reason = BACKENDS[backend.removesuffix("-direct")].unsupported(
                            table, SparseOptimizer(name=args.optimizer), device)
                        if reason is not None:
                            print(f"{prefix}  unavailable: {reason[:70]}")
                            continue
                    need = estimate_gb(backend, shape, args.optimizer, weight_dtype)
                    if need > args.max_gb:
                        print(f"{prefix}  skipped: needs ~{need:.1f} GB > --max-gb {args.max_gb}")
                        continue
                    runs.append((prefix, backend, weight_dtype, need))
            together = sum(need for *_, need in runs)
            if args.interleave and together > args.max_gb:
                print(f"{shape.name}: timed one backend at a time (together ~{together:.1f} GB > --max-gb)")
            elif args.interleave:
                steps_of = [make_step(b, device, shape, args.optimizer, w, args.check_ids) for _, b, w, _ in runs]
                seconds = time_interleaved(steps_of, device, warmup, steps, args.rounds)
                for (prefix, backend, weight_dtype, _), secs in zip(runs, seconds, strict=True):
                    print(report(prefix, shape, backend, weight_dtype, args.optimizer, secs), flush=True)
                continue
            for prefix, backend, weight_dtype, _ in runs:
                step = make_step(backend, device, shape, args.optimizer, weight_dtype, args.check_ids)
                secs = time_steps(step, device, warmup, steps)
                print(report(prefix, shape, backend, weight_dtype, args.optimizer, secs), flush=True)
                del step
                if device.type == "cuda":
                    torch.cuda.empty_cache()


def time_interleaved(steps_of: list[Callable[[], None]], device: torch.device, warmup: int, steps: int,
                     rounds: int) -> list[float]:
    """Seconds per step of each step function, timed round-robin; the median of its turns.

    A turn is one step on CPU (``steps`` turns each) and a block of ``steps`` back-to-back steps
    timed with CUDA events on a GPU (``rounds`` turns each). On a machine shared with other jobs,
    load changes over a run; taking turns spreads it over every backend alike, so their ratio is
    fair even when the absolute times move.
    """
    for step in steps_of:
        for _ in range(warmup):
            step()
    turns, block = (steps, 1) if device.type == "cpu" else (rounds, steps)
    times: list[list[float]] = [[] for _ in steps_of]
    for _ in range(turns):
        for step, seen in zip(steps_of, times, strict=True):
            seen.append(time_steps(step, device, 0, block))
    return [statistics.median(seen) for seen in times]


def report(prefix: str, shape: Shape, backend: str, weight_dtype: str, optimizer: str, seconds: float) -> str:
    """One table row: ms per step, lookups/s and the effective GB/s of a perfect kernel (module docstring)."""
    lookups, bags = shape.batch * sum(shape.hots), shape.batch * len(shape.hots)
    state = state_floats(backend, optimizer, shape.dim)
    width = weight_bytes(backend, weight_dtype)
    moved = 3 * lookups * shape.dim * width + (2 * bags * shape.dim + 2 * lookups * state) * 4
    return f"{prefix} {seconds * 1e3:>9.3f} {lookups / seconds / 1e6:>11.2f} {moved / seconds / 1e9:>7.1f}"


if __name__ == "__main__":
    main()

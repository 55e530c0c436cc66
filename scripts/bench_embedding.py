"""Embedding table throughput: forward + backward + fused update, recframe backends vs plain PyTorch.

Criteo-sized configs: ``--tables`` tables (26) of ``--rows`` rows (100,000), one feature each,
dims 64 and 128, 1 and 20 ids per feature, batch 2048 and 16384. Backends:

- ``fbgemm``: recframe EmbeddingBagCollection on fbgemm's TBE (where fbgemm supports the optimizer here);
- ``torch``: recframe EmbeddingBagCollection on the torch backend;
- ``nn``: one ``nn.EmbeddingBag(mode="sum", sparse=True)`` per table + ``torch.optim.Adagrad`` on the
  sparse gradients (step + zero_grad), the plain-PyTorch way.

The default optimizer is ``adagrad`` (exact, per element), the same math as the ``nn`` baseline
(eps 1e-8 for all). A step is: forward of a fixed batch (a KeyedJaggedTensor for recframe),
``backward`` of a fixed random output gradient, and the update. Reported: median ms per step,
lookups/s (ids per step / time) and effective GB/s = bytes a perfect kernel would move per step /
time, with bytes = lookups * dim * 4 (read rows) + bags * dim * 4 (write output) + bags * dim * 4
(read the output gradient) + lookups * dim * 4 * 2 (read and write rows) + the optimizer state
read and written per lookup (adagrad: dim floats, rowwise_adagrad: one float, sgd: none).
Configs whose estimated memory exceeds ``--max-gb`` are listed as skipped. Runs on CUDA too when
available (torch and nn backends; fbgemm where its CUDA build imports).

On a CPU shared with other jobs, ``--threads 1`` gives far steadier numbers: with every core busy,
torch's multi-threaded ops wait on descheduled threads (measured here: 10-30x slower steps).

    python scripts/bench_embedding.py                      # CPU (+ CUDA if present), all configs
    python scripts/bench_embedding.py --rows 1000000 --dims 128 --ids 20 --batches 16384 --devices cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.embedding.kernels.fbgemm import unsupported
from recframe.sparse import KeyedJaggedTensor

STATE_FLOATS = {"sgd": lambda dim: 0, "adagrad": lambda dim: dim, "rowwise_adagrad": lambda dim: 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per table")
    parser.add_argument("--tables", type=int, default=26, help="number of tables (one feature each)")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128], help="embedding dims")
    parser.add_argument("--ids", type=int, nargs="+", default=[1, 20], help="ids per feature per sample")
    parser.add_argument("--batches", type=int, nargs="+", default=[2048, 16384], help="batch sizes")
    parser.add_argument("--backends", nargs="+", default=["fbgemm", "torch", "nn"], help="fbgemm, torch, nn")
    parser.add_argument("--optimizer", default="adagrad", choices=sorted(STATE_FLOATS),
                        help="recframe backends' optimizer (nn always uses torch.optim.Adagrad)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 2 on cpu, 20 on cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 1 on cpu, 5 on cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip configs estimated to need more memory")
    return parser.parse_args()


def make_step(backend: str, device: torch.device, rows: int, tables: int, dim: int, ids: int, batch: int,
              optimizer: str) -> Callable[[], None]:
    """Build the module and a fixed batch; return one training step."""
    lookups = tables * batch * ids
    values = torch.randint(0, rows, (lookups,), device=device)
    grad = torch.randn(batch, tables * dim, device=device)
    if backend == "nn":
        embs = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum", sparse=True) for _ in range(tables)).to(device)
        opt = torch.optim.Adagrad(embs.parameters(), lr=0.01, eps=1e-8)
        per_table = values.view(tables, batch * ids)
        offsets = torch.arange(0, batch * ids, ids, device=device)

        def nn_step() -> None:
            out = torch.cat([emb(per_table[t], offsets) for t, emb in enumerate(embs)], dim=1)
            out.backward(grad)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return nn_step
    specs = [TableConfig(name=f"t{t}", num_embeddings=rows, embedding_dim=dim, feature_names=[f"f{t}"])
             for t in range(tables)]
    ebc = EmbeddingBagCollection(specs, SparseOptimizer(name=optimizer, lr=0.01), backend=backend, device=device)
    kjt = KeyedJaggedTensor.from_lengths([f"f{t}" for t in range(tables)], values,
                                         torch.full((tables * batch,), ids, device=device))

    def recframe_step() -> None:
        ebc(kjt).values().backward(grad)

    return recframe_step


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per step."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def estimate_gb(backend: str, rows: int, tables: int, dim: int, lookups: int, optimizer: str) -> float:
    """Rough peak memory: tables + optimizer state + a few [lookups, dim] fp32 intermediates in backward."""
    state = dim if backend == "nn" else STATE_FLOATS[optimizer](dim)
    intermediates = {"fbgemm": 1, "torch": 3, "nn": 3}[backend]
    return (tables * rows * (dim + state) + intermediates * lookups * dim) * 4 / 1e9


def main() -> None:
    args = parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    header = (f"{'device':<6} {'backend':<7} {'dim':>4} {'ids':>4} {'batch':>6} {'ms/step':>9} "
              f"{'Mlookups/s':>11} {'GB/s':>7}")
    print(f"{args.tables} tables x {args.rows:,} rows, optimizer {args.optimizer} (nn: torch.optim.Adagrad), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(header)
    print("-" * len(header))
    torch.manual_seed(0)
    for device_name in devices:
        device = torch.device(device_name)
        steps = args.steps or (20 if device.type == "cuda" else 2)
        warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
        for dim in args.dims:
            for ids in args.ids:
                for batch in args.batches:
                    for backend in args.backends:
                        prefix = f"{device.type:<6} {backend:<7} {dim:>4} {ids:>4} {batch:>6}"
                        lookups = args.tables * batch * ids
                        if backend == "fbgemm":
                            table = TableConfig(name="t", num_embeddings=args.rows, embedding_dim=dim,
                                                feature_names=["f"])
                            reason = unsupported(table, SparseOptimizer(name=args.optimizer), device)
                            if reason is not None:
                                print(f"{prefix}  unavailable: {reason[:70]}")
                                continue
                        need = estimate_gb(backend, args.rows, args.tables, dim, lookups, args.optimizer)
                        if need > args.max_gb:
                            print(f"{prefix}  skipped: needs ~{need:.1f} GB > --max-gb {args.max_gb}")
                            continue
                        step = make_step(backend, device, args.rows, args.tables, dim, ids, batch, args.optimizer)
                        seconds = time_steps(step, device, warmup, steps)
                        bags = args.tables * batch
                        state = dim if backend == "nn" else STATE_FLOATS[args.optimizer](dim)
                        moved = (3 * lookups * dim + 2 * bags * dim + 2 * lookups * state) * 4
                        print(f"{prefix} {seconds * 1e3:>9.1f} {lookups / seconds / 1e6:>11.2f} "
                              f"{moved / seconds / 1e9:>7.2f}", flush=True)
                        del step
                        if device.type == "cuda":
                            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

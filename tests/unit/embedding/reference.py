"""A plain-PyTorch reference for the embedding collections, and random test inputs.

The reference keeps each table as a dense ``nn.Parameter``, pools bags with Python loops, gets
the gradient from autograd (so duplicate ids are summed, as fbgemm's exact optimizers do), and
applies each optimizer with a Python loop over the rows looked up in the batch. Its formulas are
written here from fbgemm's kernels (fbgemm_gpu/codegen/genscript/optimizers.py), independently
of recframe/embedding/optimizers.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from recframe.embedding import SparseOptimizer, TableConfig
from recframe.sparse import KeyedJaggedTensor


class Reference:
    """Dense tables with per-row optimizer updates in Python.

    Args:
        tables: the tables.
        optimizer: the optimizer of every table.
        weights: initial fp32 weight of each table, by name.
    """

    def __init__(self, tables: list[TableConfig], optimizer: SparseOptimizer, weights: dict[str, torch.Tensor]):
        self.tables = tables
        self.opt = optimizer
        self.w = {t.name: nn.Parameter(weights[t.name].detach().float().clone()) for t in tables}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        for t in tables:
            n, d = t.num_embeddings, t.embedding_dim
            self.state[t.name] = {
                "sgd": {},
                "adagrad": {"momentum1": torch.zeros(n, d)},
                "rowwise_adagrad": {"momentum1": torch.zeros(n)},
                "adam": {"momentum1": torch.zeros(n, d), "momentum2": torch.zeros(n, d)},
                "rowwise_adam": {"momentum1": torch.zeros(n, d), "momentum2": torch.zeros(n)},
                "lamb": {"momentum1": torch.zeros(n, d), "momentum2": torch.zeros(n, d)},
            }[optimizer.name]
        self.step = 0
        self.touched: dict[str, set[int]] = {t.name: set() for t in tables}

    def pooled(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, sum dims]`` in table order, bag by bag."""
        columns = []
        batch = kjt.stride()
        for t in self.tables:
            for feature in t.feature_names:
                jt = kjt[feature]
                ids, lengths = jt.values().tolist(), jt.lengths().tolist()
                weights = jt.weights_or_none()
                rows, start = [], 0
                for b in range(batch):
                    bag = torch.zeros(t.embedding_dim)
                    for i in range(start, start + lengths[b]):
                        self.touched[t.name].add(ids[i])
                        weight = 1.0 if weights is None else float(weights[i])
                        bag = bag + weight * self.w[t.name][ids[i]]
                    if t.pooling == "mean" and lengths[b] > 0:
                        bag = bag / lengths[b]
                    rows.append(bag)
                    start += lengths[b]
                columns.append(torch.stack(rows))
        return torch.cat(columns, dim=1)

    def sequence(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """``{feature: [num_ids, dim]}`` in table order."""
        out = {}
        for t in self.tables:
            for feature in t.feature_names:
                ids = kjt[feature].values().tolist()
                self.touched[t.name].update(ids)
                out[feature] = torch.stack([self.w[t.name][i] for i in ids]) if ids else torch.zeros(0, t.embedding_dim)
        return out

    @torch.no_grad()
    def update(self) -> None:
        """One optimizer step on every row looked up since the last update (after ``backward``)."""
        self.step += 1
        for t in self.tables:
            grad = self.w[t.name].grad
            for row in sorted(self.touched[t.name]):
                g = grad[row].clone() if grad is not None else torch.zeros(t.embedding_dim)
                self.w[t.name][row] = self._row_update(self.w[t.name][row].clone(), g, self.state[t.name], row)
            self.w[t.name].grad = None
            self.touched[t.name] = set()

    def _row_update(self, w: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], row: int) -> torch.Tensor:
        o, t = self.opt, self.step
        lr, eps, wd = o.lr, o.eps, o.weight_decay
        if o.name == "sgd":
            return w - lr * g
        if o.name == "adagrad":
            state["momentum1"][row] += g * g
            return w - lr * g / (torch.sqrt(state["momentum1"][row]) + eps)
        if o.name == "rowwise_adagrad":
            l2 = wd > 0 and o.weight_decay_mode == "l2"
            gd = g + wd * w if l2 else g
            state["momentum1"][row] += float((gd * gd).sum()) / g.numel()
            k = lr / (float(state["momentum1"][row]) ** 0.5 + eps)
            if wd == 0:
                return w - k * g
            c = 1.0 - k * wd if l2 else 1.0 - lr * wd
            return c * w - k * g
        b1, b2 = o.betas
        m1 = state["momentum1"]
        m2 = state["momentum2"]
        m1[row] = b1 * m1[row] + (1 - b1) * g
        if o.name == "rowwise_adam":
            m2[row] = b2 * m2[row] + (1 - b2) * float((g * g).sum()) / g.numel()
        else:
            m2[row] = b2 * m2[row] + (1 - b2) * g * g
        direction = (m1[row] / (1 - b1**t)) / (torch.sqrt(m2[row] / (1 - b2**t)) + eps)
        if o.name in ("adam", "rowwise_adam"):
            return w - lr * (direction + wd * w)
        r = direction + wd * w  # lamb
        return w - lr * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(r)) * r


# Every optimizer configuration the backend comparisons run (each backend where it supports it).
OPTIMIZERS = [
    SparseOptimizer(name="sgd", lr=0.1),
    SparseOptimizer(name="adagrad", lr=0.1),
    SparseOptimizer(name="rowwise_adagrad", lr=0.1),
    SparseOptimizer(name="rowwise_adagrad", lr=0.1, weight_decay=0.05, weight_decay_mode="l2"),
    SparseOptimizer(name="rowwise_adagrad", lr=0.1, weight_decay=0.05, weight_decay_mode="decoupled"),
    SparseOptimizer(name="adam", lr=0.05, weight_decay=0.01),
    SparseOptimizer(name="rowwise_adam", lr=0.05, weight_decay=0.01, betas=[0.8, 0.99]),
    SparseOptimizer(name="lamb", lr=0.05, weight_decay=0.01),
]

@dataclass
class Case:
    """A random collection: tables and a generator of batches for them."""

    tables: list[TableConfig]
    weighted: bool
    seed: int

    def batches(self, count: int, batch_size: int = 4) -> list[KeyedJaggedTensor]:
        """Random batches: keys shuffled plus an unused key, empty bags, many duplicate ids."""
        rng = random.Random(self.seed + 1)
        rows = {f: t.num_embeddings for t in self.tables for f in t.feature_names}
        out = []
        for _ in range(count):
            keys = list(rows) + ["unused"]
            rng.shuffle(keys)
            lengths, values = [], []
            for key in keys:
                for _ in range(batch_size):
                    n = rng.choice([0, 1, 2, 3, 4])
                    lengths.append(n)
                    values.extend(rng.randrange(rows.get(key, 5)) for _ in range(n))
            weights = torch.tensor([rng.uniform(0.5, 1.5) for _ in values]) if self.weighted else None
            out.append(KeyedJaggedTensor.from_lengths(keys, torch.tensor(values, dtype=torch.int64),
                                                      torch.tensor(lengths), weights=weights))
        return out


def random_case(seed: int, sequence: bool = False) -> Case:
    """Mixed dims (multiples of 4, for fbgemm), a shared table, sum and mean pooling, small row counts.

    Seeds 0, 1 and 5 together cover: weighted and unweighted bags, all-mean and sum + mean
    collections, and one fbgemm kernel holding sum tables of three different dims (seed 5).
    """
    rng = random.Random(seed)
    tables = []
    for i in range(rng.randint(2, 4)):
        shared = i == 0 or rng.random() < 0.3
        features = [f"t{i}_f{j}" for j in range(2 if shared else 1)]
        pooling = "none" if sequence else rng.choice(["sum", "mean"])
        tables.append(TableConfig(name=f"t{i}", num_embeddings=rng.randint(4, 12),
                                  embedding_dim=rng.choice([4, 8, 12]), feature_names=features, pooling=pooling))
    # Weighted for seeds 0, 2, 3, 5, ... (sequence lookups must ignore the weights), unweighted for 1, 4, 7, ...
    return Case(tables=tables, weighted=seed % 3 != 1, seed=seed)

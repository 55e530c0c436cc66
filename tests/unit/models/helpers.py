"""Shared pieces of the model tests: exact AUC, small collections, a tiny training loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.models import wide_tables
from recframe.sparse import Batch


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC by the rank-sum (Mann-Whitney) formula; tied scores share their mean rank."""
    s = scores.detach().double().flatten()
    y = labels.flatten() > 0.5
    order = torch.argsort(s)
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
    mean_rank = (torch.cumsum(counts, 0) - counts + 1) + (counts - 1) / 2.0
    ranks = torch.empty_like(s)
    ranks[order] = mean_rank[inverse].double()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tables_for(config: SyntheticConfig, dim: int | Sequence[int], pooling: str = "sum") -> list[TableConfig]:
    """One table per synthetic sparse feature, sized like the generator's tables."""
    dims = [dim] * config.num_sparse_features if isinstance(dim, int) else list(dim)
    return [
        TableConfig(name=f"t_{name}", num_embeddings=rows, embedding_dim=d, feature_names=[name], pooling=pooling)
        for name, rows, d in zip(config.feature_names(), config.table_sizes, dims, strict=True)
    ]


def ebc(tables: list[TableConfig], lr: float = 0.1, name: str = "rowwise_adagrad") -> EmbeddingBagCollection:
    """A torch-backend collection (the reference backend, runs everywhere)."""
    return EmbeddingBagCollection(tables, SparseOptimizer(name=name, lr=lr), backend="torch")


def wide_ebc(tables: list[TableConfig], num_tasks: int, lr: float = 0.1) -> EmbeddingBagCollection:
    return ebc(wide_tables(tables, num_tasks), lr=lr, name="adagrad")


def train(model: nn.Module, make_batch: Callable[[int], Batch], steps: int, lr: float) -> list[float]:
    """Adam on the dense parameters (the tables train inside backward); returns the loss per step."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        batch = make_batch(step)
        loss = model.loss(model(batch), batch.labels).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate_auc(model: nn.Module, gen: SyntheticCriteo, batches: range, batch_size: int) -> list[float]:
    """AUC per task of ``model`` and of the hidden model on held-out batches."""
    model.eval()
    data = [gen.batch(i, batch_size) for i in batches]
    logits = torch.cat([model(b) for b in data])
    hidden = torch.cat([gen.hidden_logits(b) for b in data])
    labels = torch.cat([b.labels for b in data])
    if logits.dim() == 1:
        return [auc(logits, labels), auc(hidden, labels)]
    return [auc(logits[:, t], labels[:, t]) for t in range(labels.shape[1])] + [
        auc(hidden[:, t], labels[:, t]) for t in range(labels.shape[1])
    ]

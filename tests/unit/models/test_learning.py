"""Each model learns a planted signal: synthetic labels drawn from a hidden model over the same
features; the loss falls and held-out AUC passes 0.75 (above the issue's bar of 0.70) within a few
hundred CPU steps. TwoTower's recall@10 must beat random many times over.

The data's dense part alone explains little (its hidden AUC is checked to be under 0.70), so
passing the bar requires learning the embedding tables, not only the dense tower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from torch import nn

from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_retrieval import SyntheticRetrieval, SyntheticRetrievalConfig
from recframe.embedding import TableConfig
from recframe.models import DLRM, DLRM_DCN, DeepFM, Task, TwoTower, WideDeep, recall_at_k

from .helpers import auc, ebc, evaluate_auc, tables_for, train, wide_ebc

BATCH, STEPS, LR = 256, 200, 1e-2
HELD_OUT = range(100_000, 100_004)  # batch indices never used for training
DIM = 8


def _config(num_tasks: int = 1) -> SyntheticConfig:
    return SyntheticConfig(num_dense_features=4, table_sizes=(100,) * 8, ids_per_feature=(1, 1, 1, 1, 2, 2, 3, 3),
                           zipf_exponent=1.05, dense_weight=0.5, num_tasks=num_tasks)


def _tasks(num_tasks: int) -> list[Task]:
    return [Task("click"), Task("purchase", weight=0.5)][:num_tasks] if num_tasks > 1 else [Task("label")]


def _dlrm(c: SyntheticConfig) -> nn.Module:
    return DLRM(ebc(tables_for(c, DIM)), 4, [16, DIM], [16], tasks=_tasks(c.num_tasks))


def _dcn(c: SyntheticConfig) -> nn.Module:
    return DLRM_DCN(ebc(tables_for(c, DIM)), 4, [16, DIM], [16], num_cross_layers=2, low_rank=8,
                    tasks=_tasks(c.num_tasks))


def _deepfm(c: SyntheticConfig) -> nn.Module:
    tables = tables_for(c, DIM)
    return DeepFM(ebc(tables), wide_ebc(tables, c.num_tasks), 4, [16], tasks=_tasks(c.num_tasks))


def _wide_deep(c: SyntheticConfig) -> nn.Module:
    tables = tables_for(c, DIM)
    return WideDeep(ebc(tables), wide_ebc(tables, c.num_tasks), 4, [16], tasks=_tasks(c.num_tasks))


CASES: dict[str, tuple[Callable[[SyntheticConfig], nn.Module], int]] = {
    "dlrm": (_dlrm, 1), "dlrm_dcn": (_dcn, 1), "deepfm": (_deepfm, 1), "wide_deep": (_wide_deep, 1),
    "dlrm_two_tasks": (_dlrm, 2), "deepfm_two_tasks": (_deepfm, 2),
}


def test_the_dense_part_alone_is_not_enough() -> None:
    """Guard for the tests below: without the sparse signal the bar is out of reach."""
    config = _config()
    gen = SyntheticCriteo(config, seed=0)
    dense_only = SyntheticCriteo(replace(config, sparse_weight=0.0, pairwise_weight=0.0), seed=0)
    batches = [gen.batch(i, 1024) for i in HELD_OUT]
    labels = torch.cat([b.labels for b in batches])
    assert auc(torch.cat([dense_only.hidden_logits(b) for b in batches]), labels) < 0.70
    assert auc(torch.cat([gen.hidden_logits(b) for b in batches]), labels) > 0.85


@pytest.mark.parametrize("case", CASES)
def test_model_learns_the_planted_signal(case: str) -> None:
    build, num_tasks = CASES[case]
    config = _config(num_tasks)
    gen = SyntheticCriteo(config, seed=0)
    torch.manual_seed(0)
    model = build(config)
    losses = train(model, lambda step: gen.batch(step, BATCH), STEPS, LR)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.08, f"{case}: loss {first:.3f} -> {last:.3f}"
    aucs = evaluate_auc(model, gen, HELD_OUT, 1024)
    model_aucs, hidden_aucs = aucs[:num_tasks], aucs[num_tasks:]
    for task, (got, best) in enumerate(zip(model_aucs, hidden_aucs, strict=True)):
        assert got > 0.75, f"{case}: task {task} AUC {got:.3f} (the hidden model reaches {best:.3f})"
        assert got <= best + 0.02  # sanity: nothing beats the model that drew the labels


def test_two_tower_recall_beats_random() -> None:
    config = SyntheticRetrievalConfig(num_users=500, num_items=200, num_clusters=10, history_length=4, noise=0.1)
    gen = SyntheticRetrieval(config, seed=0)
    user_tables = [
        TableConfig(name="users", num_embeddings=500, embedding_dim=16, feature_names=["user_id"]),
        TableConfig(name="history", num_embeddings=200, embedding_dim=16, feature_names=["user_history"],
                    pooling="mean"),
    ]
    item_tables = [
        TableConfig(name="items", num_embeddings=200, embedding_dim=16, feature_names=["item_id"]),
        TableConfig(name="categories", num_embeddings=10, embedding_dim=16, feature_names=["item_category"]),
    ]
    torch.manual_seed(0)
    model = TwoTower(ebc(user_tables), ebc(item_tables), [32, 16], [32, 16], temperature=0.1)

    def recall() -> float:
        held_out = gen.batch(99_999, 1000)
        with torch.no_grad():
            users = model.encode_users(held_out.sparse_features)
            items = model.encode_items(gen.item_catalog())
        return recall_at_k(users, items, held_out.sparse_features["item_id"].values(), k=10)

    random_recall = 10 / config.num_items
    before = recall()
    losses = train(model, lambda step: gen.batch(step, BATCH), 150, LR)
    after = recall()
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.3
    assert before < 3 * random_recall  # an untrained model is near random
    # the best possible is about 0.46 (10 of a cluster's 20 items, 91% of positives in the cluster)
    assert after > 6 * random_recall, f"recall@10 {after:.3f}, random {random_recall:.3f}"

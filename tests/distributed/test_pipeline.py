"""The pipelined step with several ranks: input dists started early give exactly the plain results.

One spawn per world size. In each:

- ``InputDist.start(kjt).wait()`` equals the one-shot ``InputDist(kjt)`` (keys, stride, lengths,
  ids, weights) for row_wise, table_wise, column_wise and a mixed plan, weighted and not, also
  with two input dists in flight, a blocking one between them and the waits in the reverse order
  (an all-data_parallel plan has no input dist: its ids stay on their rank);
- (world 2) a sharded model (the tables, then a dense layer in DDP) trained for ``STEPS`` steps
  with the input dists of batches i+1 and i+2 started before step i (as in a Lightning run, whose
  fetcher holds one batch ahead), and a validation-like forward of other batches in between, has
  bit-identical losses, forward outputs and tables to the same model trained without prefetching.

A mutation check (the prefetched input of another batch used) makes the training comparison fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from recframe.distributed import ShardedEmbeddingBagCollection
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer
from recframe.sparse import KeyedJaggedTensor
from tests.distributed.harness import run_workers
from tests.distributed.test_sharded import BATCH, batches, make_tables, plans

pytestmark = pytest.mark.distributed

KINDS = ("row_wise", "table_wise", "column_wise", "data_parallel", "mixed")
STEPS = 6


def same_kjt(a: KeyedJaggedTensor, b: KeyedJaggedTensor) -> bool:
    """Keys, stride, lengths, ids and weights all equal (exactly)."""
    weights_equal = (a.weights_or_none() is None and b.weights_or_none() is None) or (
        a.weights_or_none() is not None and b.weights_or_none() is not None
        and torch.equal(a.weights(), b.weights()))
    return (a.keys() == b.keys() and a.stride() == b.stride() and torch.equal(a.lengths(), b.lengths())
            and torch.equal(a.values(), b.values()) and weights_equal)


def split_equals_one_shot(rank: int, world: int) -> dict[str, bool]:
    """For each plan and weighting: whether start + wait (also interleaved) equals the one-shot input dist."""
    out = {}
    for kind in KINDS:
        plan, lws = plans(world)[kind]
        torch.manual_seed(0)
        sharded = ShardedEmbeddingBagCollection.from_collection(
            EmbeddingBagCollection(make_tables(), SparseOptimizer(name="sgd")), plan, local_world_size=lws)
        route = sharded.input_dist
        if kind == "data_parallel":  # replicas' ids stay on the rank: no input dist to pipeline
            out[kind] = route is None
            continue
        mp = sharded._mp_index  # the input dist's features: the model-parallel tables' (mixed: not the replicas')
        for weighted in (False, True):
            kjts = [sharded._select(batches(world, step, weighted)[1][rank]) for step in range(3)]
            kjts = [kjt if mp is None else kjt.permute(mp) for kjt in kjts]
            expected = [route(kjt) for kjt in kjts]
            first, second = route.start(kjts[0]), route.start(kjts[1])
            between = route(kjts[2])  # a blocking input dist while two are in flight
            got = [first.wait(), second.wait()]
            late = route.start(kjts[2])
            reverse_second, reverse_first = route.start(kjts[1]), route.start(kjts[0])
            got_reverse = [reverse_first.wait(), reverse_second.wait(), late.wait()]
            out[f"{kind}, weighted={weighted}"] = (
                all(same_kjt(g, e) for g, e in zip(got, expected[:2], strict=True))
                and same_kjt(between, expected[2])
                and all(same_kjt(g, e) for g, e in zip(got_reverse, [expected[0], expected[1], expected[2]],
                                                       strict=True)))
    return out


class Tiny(nn.Module):
    """Sharded tables, then a dense layer (wrapped in DDP by the test): its all-reduce runs in backward."""

    def __init__(self, embeddings: ShardedEmbeddingBagCollection, width: int) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.dense = nn.Linear(width, 1)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        return self.dense(self.embeddings(features).values()).squeeze(1)


def build(rank: int, world: int) -> tuple[Tiny, DistributedDataParallel, torch.optim.Optimizer]:
    """The same model on every rank (seeded), tables of the mixed plan, DDP over the dense layer only."""
    plan, lws = plans(world)["mixed"]
    torch.manual_seed(0)
    embeddings = ShardedEmbeddingBagCollection.from_collection(
        EmbeddingBagCollection(make_tables(), SparseOptimizer(name="adagrad", lr=0.1)), plan, local_world_size=lws)
    model = Tiny(embeddings, sum(embeddings.feature_dims))
    dense = DistributedDataParallel(model.dense)
    model.dense = dense
    return model, dense, torch.optim.SGD(dense.parameters(), lr=0.1)


def train(rank: int, world: int, pipelined: bool) -> dict[str, list[torch.Tensor]]:
    """``STEPS`` steps on this rank's batches; pipelined: batches i+1 and i+2 started before step i."""
    model, _, optimizer = build(rank, world)
    initial = [value.clone() for value in model.embeddings.state_dict().values()]
    steps = [batches(world, step, weighted=step % 2 == 1)[1][rank] for step in range(STEPS)]
    held = [batches(world, 50 + step, weighted=False)[1][rank] for step in range(2)]  # "validation" batches
    if pipelined:
        for kjt in steps[:2]:
            model.embeddings.prefetch(kjt)
    losses, outputs = [], []
    for step, kjt in enumerate(steps):
        if pipelined and step + 2 < STEPS:
            model.embeddings.prefetch(steps[step + 2])
        if step == 3:  # validation between two steps, with input dists in flight
            with torch.no_grad():
                outputs += [model(v) for v in held]
        target = torch.randn(BATCH, generator=torch.Generator().manual_seed(100 + step * world + rank))
        logits = model(kjt)
        loss = ((logits - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        outputs.append(logits.detach())
    tables = [value.clone() for value in model.embeddings.state_dict().values()]
    moved = all(not torch.equal(a, b) for a, b in zip(initial, tables, strict=True))
    return {"losses": losses, "outputs": outputs, "tables": tables, "moved": moved,
            "left": len(model.embeddings._prefetched)}


def worker(rank: int, world: int) -> dict:
    out: dict = {"split": split_equals_one_shot(rank, world)}
    if world == 2:
        out["plain"], out["pipelined"] = train(rank, world, False), train(rank, world, True)
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_pipelined_input_dist_equals_the_plain_one(tmp_path, world: int) -> None:
    results = run_workers(tmp_path, world, worker)
    for rank, result in enumerate(results):
        wrong = [case for case, ok in result["split"].items() if not ok]
        assert not wrong, f"world {world}, rank {rank}: start + wait differs from the one-shot input dist: {wrong}"
        if world != 2:
            continue
        plain, pipelined = result["plain"], result["pipelined"]
        for name in ("losses", "outputs", "tables"):
            assert len(plain[name]) == len(pipelined[name])
            for step, (a, b) in enumerate(zip(plain[name], pipelined[name], strict=True)):
                assert torch.equal(a, b), f"rank {rank}: {name}[{step}] differ: {a} vs {b}"
        assert pipelined["left"] == 0, "every started input dist was consumed"
        assert plain["moved"] and pipelined["moved"], "training changed every table shard"

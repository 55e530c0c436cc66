"""The output dist overlaps the bottom MLP, forward and backward (issue 22), with 2 gloo ranks.

For DLRM and DLRM_DCN sharded table_wise (the dense part in DDP, as the strategy wraps it), each
rank records in order: the pooled all-to-alls' launches and waits (``comms.start_all_to_all_float``
wrapped), the bottom MLP's forward (a forward hook) and its backward (hooks on the gradients of its
last and first layers' weights: the first and the last of its backward nodes). Required:

- forward: launch, bottom MLP forward, wait (the MLP runs while the pooled rows travel);
- backward: launch of the gradients' all-to-all, bottom MLP backward (first to last layer), wait.

A control forward that reads the pooled values before running the bottom MLP (what DLRM did
before) records launch, wait, MLP: the recorder sees a missing overlap. The sharded models are also
trained 3 steps against the unsharded ones on the global batch: equal logits and losses (1e-5).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from recframe.distributed import ShardingPlan, TablePlacement, comms, shard_model
from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
from recframe.models._pooled import stack_pooled
from recframe.models.dlrm import DLRM, DLRM_DCN
from recframe.sparse import Batch, KeyedJaggedTensor
from recframe.training.strategy import embedding_state_names
from tests.distributed.harness import run_workers

pytestmark = pytest.mark.distributed

BATCH = 8  # samples per rank
DIM = 8
DENSE = 5
FEATURES = ["f0", "f1", "f2", "f3"]
STEPS = 3
TOL = 1e-5


def make_model(kind: str) -> DLRM | DLRM_DCN:
    torch.manual_seed(0)
    tables = [TableConfig(name=f"t{i}", num_embeddings=17 + i, embedding_dim=DIM, feature_names=[f])
              for i, f in enumerate(FEATURES)]
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="sgd", lr=0.1))
    if kind == "dlrm":
        return DLRM(ebc, DENSE, [16, DIM], [16])
    return DLRM_DCN(ebc, DENSE, [16, DIM], [16], num_cross_layers=2, low_rank=4)


def rank_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Rank ``rank``'s dense features, lengths ``[F, B]``, ids per feature and labels."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    dense = torch.rand(BATCH, DENSE, generator=gen)
    lengths = torch.randint(0, 3, (len(FEATURES), BATCH), generator=gen)
    ids = [torch.randint(0, 17 + i, (int(lengths[i].sum()),), generator=gen) for i in range(len(FEATURES))]
    labels = torch.randint(0, 2, (BATCH,), generator=gen).float()
    return dense, lengths, ids, labels


def make_batch(parts: list[tuple]) -> Batch:
    """One Batch of the samples of ``parts`` (rank batches), in order."""
    dense = torch.cat([p[0] for p in parts])
    lengths = torch.cat([p[1] for p in parts], dim=1)
    values = torch.cat([p[2][f][:] for f in range(len(FEATURES)) for p in parts])
    kjt = KeyedJaggedTensor.from_lengths(FEATURES, values, lengths.reshape(-1))
    return Batch(dense, kjt, labels=torch.cat([p[3] for p in parts]))


class Recorder:
    """Records the pooled all-to-alls' launches and waits and the bottom MLP's forward and backward."""

    def __init__(self, model: DLRM | DLRM_DCN) -> None:
        self.events: list[str] = []
        self._start = comms.start_all_to_all_float
        comms.start_all_to_all_float = self._launch  # _PooledStart and _PooledWait call it through the module
        mlp = model.dense_arch
        mlp.register_forward_hook(lambda *_: self.events.append("mlp"))
        linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
        linears[-1].weight.register_hook(lambda g: self.events.append("mlp backward first") or g)
        linears[0].weight.register_hook(lambda g: self.events.append("mlp backward last") or g)

    def _launch(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        self.events.append("launch")
        pending = self._start(*args, **kwargs)
        wait = pending.wait

        def recorded() -> torch.Tensor:
            self.events.append("wait")
            return wait()

        pending.wait = recorded
        return pending

    def close(self) -> None:
        comms.start_all_to_all_float = self._start


def old_dlrm_forward(model: DLRM, batch: Batch) -> torch.Tensor:
    """DLRM's forward reading the pooled values before the bottom MLP (no overlap): the control."""
    sparse = stack_pooled(model.embeddings(batch.sparse_features), model.feature_names, model.embedding_dim)
    dense = model.dense_arch(batch.dense_features)
    return model.head(model.over_arch(model.interaction(dense, sparse)))


def worker(rank: int, world: int) -> dict:
    out: dict = {}
    plan = ShardingPlan(world, {f"t{i}": TablePlacement("table_wise", [i % world]) for i in range(len(FEATURES))})
    for kind in ("dlrm", "dlrm_dcn"):
        reference = make_model(kind)
        model = shard_model(copy.deepcopy(reference), plan)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, embedding_state_names(model))
        ddp = DistributedDataParallel(model)
        dense_params = [p for n, p in reference.named_parameters() if not n.startswith("embeddings.")]
        ref_opt = torch.optim.SGD(dense_params, lr=0.1)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        recorder = Recorder(model)
        diffs, orders = [], []
        try:
            for step in range(STEPS):
                parts = [rank_batch(r, step) for r in range(world)]
                recorder.events.clear()
                logits = ddp(make_batch([parts[rank]]))
                forward = list(recorder.events)
                loss = model.loss(logits, parts[rank][3]).total
                recorder.events.clear()
                loss.backward()
                orders.append((forward, list(recorder.events)))
                opt.step()
                opt.zero_grad()
                ref_logits = reference(make_batch(parts))
                ref_loss = reference.loss(ref_logits, torch.cat([p[3] for p in parts])).total
                ref_loss.backward()
                ref_opt.step()
                ref_opt.zero_grad()
                diffs.append(float((logits.detach() - ref_logits.detach()[rank * BATCH:(rank + 1) * BATCH])
                                   .abs().max()))
            if kind == "dlrm":
                recorder.events.clear()
                with torch.no_grad():
                    old_dlrm_forward(model, make_batch([rank_batch(rank, STEPS)]))
                out["control"] = list(recorder.events)
        finally:
            recorder.close()
        out[kind] = {"orders": orders, "diffs": diffs}
    return out


def test_output_dist_overlaps_the_bottom_mlp(tmp_path) -> None:
    results = run_workers(tmp_path, 2, worker)
    for rank, result in enumerate(results):
        for kind in ("dlrm", "dlrm_dcn"):
            assert max(result[kind]["diffs"]) < TOL, (rank, kind, result[kind]["diffs"])
            for forward, backward in result[kind]["orders"]:
                assert forward == ["launch", "mlp", "wait"], (rank, kind, forward)
                assert backward == ["launch", "mlp backward first", "mlp backward last", "wait"], (rank, kind,
                                                                                                    backward)
        assert result["control"] == ["launch", "wait", "mlp"], (rank, result["control"])

"""No host synchronization inside a training step (issue 14), checked on CPU by ``tests/sync_detector.py``.

One steady-state training step (after a warm-up step: forward, loss, backward with the fused sparse
optimizer inside, dense optimizer step) of the ``dlrm`` and ``mlperf_dcnv2`` experiment models, tiny
(``tables.row_cap=1000``, batch 64), unsharded, for the kernel backends ``torch`` and ``triton``
(Triton's CPU interpreter, which runs every program in Python: batch 8, 3 ids per multi-hot feature),
on fixed-size synthetic batches: no read of tensor data on the host,
no op whose output size depends on the data. The batch is made before the step (on a GPU it is
on the device by then). torch.optim's ``step`` counters stay on the host in a GPU run too
(non-fused optimizers): reading them is not a sync.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recframe.config.compose import compose_config
from recframe.sparse import Batch
from recframe.training.builders import build_datamodule, build_model
from recframe.training.dense_optimizers import build_dense_optimizer
from recframe.training.module import dense_parameters
from recframe.training.objectives import training_loss
from tests.sync_detector import HostReadDetector
from tests.unit.models.conftest import one_thread  # noqa: F401 (autouse: small steps run single-threaded)

BATCH = 64
TRITON_BATCH = 8  # the interpreter is slow


def _triton_interpreted() -> bool:
    try:
        from recframe.embedding.kernels import triton_kernels
    except ImportError:
        return False
    return triton_kernels.INTERPRETED


# As tests/unit/embedding/test_triton.py: the triton kernels run here only through the interpreter.
TRITON = pytest.param("triton", marks=pytest.mark.skipif(not _triton_interpreted(), reason="needs triton's CPU "
                                                          "interpreter (TRITON_INTERPRET=1, tests/conftest.py)"))




def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    loss, _ = training_loss(model, batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def host_reads_of_a_step(experiment: str, backend: str, batch_size: int = BATCH,
                         overrides: tuple[str, ...] = ()) -> HostReadDetector:
    """Build the experiment's model as ``scripts/bench_trainer.py``'s bare loop does, take a warm-up step,
    and record the host reads of the next step."""
    cfg = compose_config([f"+experiment={experiment}", "run_dir=unused", "tables.row_cap=1000",
                          f"data.batch_size={batch_size}", f"tables.backend={backend}", *overrides])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = build_dense_optimizer(dense_parameters(model), cfg.optim)
    generator = build_datamodule(cfg).generator
    _train_step(model, optimizer, generator.batch(0, batch_size))
    batch = generator.batch(1, batch_size)
    counters = [state["step"] for state in optimizer.state.values() if "step" in state]
    with HostReadDetector(is_host=lambda t: any(t is c for c in counters)) as detector:
        _train_step(model, optimizer, batch)
    return detector


@pytest.mark.parametrize("backend", ["torch", TRITON])
@pytest.mark.parametrize("experiment", ["dlrm", "mlperf_dcnv2"])
def test_a_training_step_reads_nothing_on_the_host(experiment: str, backend: str) -> None:
    if backend == "triton":
        multi_hot = ("data.ids_per_feature=[3]",) if experiment == "mlperf_dcnv2" else ()
        detector = host_reads_of_a_step(experiment, backend, TRITON_BATCH, multi_hot)
    else:
        detector = host_reads_of_a_step(experiment, backend)
    if detector.reads:
        pytest.fail(f"host reads in a {experiment} step ({backend}):\n{detector.report()}", pytrace=False)


def test_the_detector_sees_a_host_read_in_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails when someone reads a value in the step (here: the loss, as a logger would)."""
    from recframe.models.heads import MultiTaskHead

    loss = MultiTaskHead.loss

    def loss_read_on_host(self: MultiTaskHead, logits: torch.Tensor, labels: torch.Tensor):  # noqa: ANN202
        out = loss(self, logits, labels)
        out.total.item()
        return out

    monkeypatch.setattr(MultiTaskHead, "loss", loss_read_on_host)
    reads = host_reads_of_a_step("dlrm", "torch").reads
    assert [r.what for r in reads] == ["aten._local_scalar_dense (item/int/float/bool of a tensor)"]
    assert "loss_read_on_host" in reads[0].where


def test_split_into_kernel_groups_reads_nothing_given_length_per_key() -> None:
    """Tables of two dims make two kernel groups: the batch is permuted and split by key, which needs the
    ids per key; a KJT that carries them (fixed bag sizes: from shapes) costs no host read, one without
    them reads its lengths once. Per-layout constants (the key order on the device) are made at the first
    batch of a layout, before the detector watches."""
    from recframe.embedding import EmbeddingBagCollection, SparseOptimizer, TableConfig
    from recframe.sparse import KeyedJaggedTensor

    tables = [TableConfig(name="a", num_embeddings=10, embedding_dim=4, feature_names=["f0"]),
              TableConfig(name="b", num_embeddings=10, embedding_dim=8, feature_names=["f1"])]
    ebc = EmbeddingBagCollection(tables, SparseOptimizer(name="rowwise_adagrad"), backend="torch")
    ebc(KeyedJaggedTensor.from_lengths(["f1", "f0"], torch.arange(8) % 10, torch.full((4,), 2)))
    for hint, expected in (([4, 4], []), (None, ["Tensor.tolist"])):
        kjt = KeyedJaggedTensor.from_lengths(["f1", "f0"], torch.arange(8) % 10, torch.full((4,), 2),
                                             validate=False, length_per_key=hint)
        with HostReadDetector() as detector:
            ebc(kjt).values().sum().backward()
        assert [read.what for read in detector.reads] == expected, detector.report()

"""The input side on a GPU: synthetic batches made on the device, the side-stream prefetcher, pipelined == plain."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from recframe.data.prefetch import DevicePrefetcher
from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_device import DeviceSynthesizer
from recframe.training.step_scalars import StepScalars

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from integration.helpers import TINY, run_recframe, scalars  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
MLPERF_BAGS = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)


def test_cuda_batches_follow_the_host_hidden_model_and_repeat() -> None:
    config = SyntheticConfig(table_sizes=(4_000_000,) * 26, ids_per_feature=MLPERF_BAGS, num_tasks=2)
    generator = SyntheticCriteo(config, seed=5)
    maker = DeviceSynthesizer(generator, CUDA)
    batch, logits = maker.batch_and_logits(index=11, batch_size=1024)
    again = maker.batch(11, 1024)
    assert torch.equal(batch.sparse_features.values(), again.sparse_features.values())
    assert torch.equal(batch.labels, again.labels)
    on_host = batch.to(torch.device("cpu"))
    torch.testing.assert_close(logits.cpu(), generator.hidden_logits(on_host).float(), atol=2e-4, rtol=1e-4)


def test_fixed_bag_batches_are_made_without_a_host_sync() -> None:
    config = SyntheticConfig(table_sizes=(100_000,) * 26, ids_per_feature=MLPERF_BAGS)
    maker = DeviceSynthesizer(SyntheticCriteo(config, seed=0), CUDA)
    maker.batch(0, 512)  # builds the per-size layout (host work, once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = maker.batch(1, 512)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert batch.sparse_features.length_per_key() == [512 * n for n in MLPERF_BAGS]


def test_prefetcher_copies_pinned_batches_on_a_side_stream() -> None:
    generator = SyntheticCriteo(SyntheticConfig(table_sizes=(1000,) * 4), seed=0)
    host = [generator.batch(i, 256).pin_memory() for i in range(5)]
    moved = list(DevicePrefetcher(host, CUDA, lambda b, d: b.to(d, non_blocking=True)))
    for h, m in zip(host, moved, strict=True):
        assert m.labels.device.type == "cuda"
        assert torch.equal(m.sparse_features.values().cpu(), h.sparse_features.values())
        assert torch.equal(m.dense_features.cpu(), h.dense_features)


@pytest.mark.parametrize("data", [["data.generate_on=device"], ["data.generate_on=host", "data.pin_memory=true"]],
                         ids=["made_on_gpu", "copied_from_pinned"])
def test_pipelined_training_equals_the_plain_step(tmp_path: Path, data: list[str]) -> None:
    losses = {}
    for pipeline in ("true", "false"):
        run_dir = tmp_path / pipeline
        done = run_recframe("train", "+experiment=dlrm", *TINY, *data, "trainer.accelerator=gpu",
                            "trainer.max_steps=12", "trainer.val_check_interval=6", f"trainer.pipeline={pipeline}",
                            f"hydra.run.dir={run_dir}")
        assert done.returncode == 0, done.stderr[-3000:]
        losses[pipeline] = [v for _, v in scalars(run_dir)["train/loss"]]
    assert len(losses["true"]) == 12 and losses["true"] == losses["false"]


def test_cuda_windows_arrive_without_a_sync() -> None:
    scalars = StepScalars()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for loss in (1.0, 3.0):
            scalars.add({"train/loss": torch.full((), loss, device="cuda")})
        scalars.close(step=1)
        early = scalars.ready()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert early + scalars.ready(wait=True) == [(1, {"train/loss": 2.0})]


@pytest.mark.parametrize("table_stats", ["0", "5"], ids=["no_table_health", "table_health"])
@pytest.mark.parametrize("cuda_graph", ["on", "off"])
def test_training_steps_do_not_synchronize(tmp_path: Path, cuda_graph: str, table_stats: str) -> None:
    """Steps after the first few (the triton backward captures its graph at a shape's second step, the step's
    graph is captured at the fourth, each with a device synchronize) run under the sync debug mode "error":
    logging steps included, and table health's writes at steps 5, 10, 15 (their numbers copied to the host
    asynchronously, logged at a later step's end; the one pending at the end waits in on_train_end, unchecked)."""
    import pytorch_lightning as pl

    from recframe.config.compose import compose_config
    from recframe.training.app import _build_module, build_trainer
    from recframe.training.builders import build_datamodule

    class NoSync(pl.Callback):  # after the run's callbacks (extra_callbacks come last): its batch end is the last
        def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
            if trainer.global_step >= 4:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
            torch.cuda.set_sync_debug_mode("default")

    cfg = compose_config(["+experiment=dlrm", *TINY, "trainer.accelerator=gpu", "trainer.max_steps=16",
                          "trainer.log_every_n_steps=5", f"logger.table_stats_every_n_steps={table_stats}",
                          "trainer.limit_val_batches=0", f"trainer.cuda_graph={cuda_graph}", f"run_dir={tmp_path}"])
    trainer = build_trainer(cfg, tmp_path, extra_callbacks=[NoSync()], checkpoints=False)
    try:
        trainer.fit(_build_module(cfg), datamodule=build_datamodule(cfg))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 16
    if table_stats != "0":  # every write logged, at the step it was computed
        assert [s for s, _ in scalars(tmp_path)["tables/t_cat_0/coverage"]] == [5, 10, 15]

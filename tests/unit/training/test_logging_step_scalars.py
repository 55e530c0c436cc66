"""The logging step's host scalars (``log_host_scalars``) reach the logger at the steps and with the keys that
Lightning's ``self.log`` gave them: one write per logging step with ``epoch``, at ``log_every_n_steps``."""

from __future__ import annotations

from typing import Any

import pytest

from recframe.training.tensorboard import RunLogger

TINY = ["+experiment=dlrm", "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8",
        "tables.row_cap=100", "data.batch_size=8", "trainer.max_steps=12", "trainer.log_every_n_steps=5",
        "trainer.limit_val_batches=0", "logger.table_stats_every_n_steps=0"]
HOST_KEYS = {"optim/lr_dense", "optim/lr_sparse", "perf/samples_per_s", "perf/step_ms", "perf/data_wait_ms",
             "perf/forward_backward_ms", "perf/optimizer_ms"}


@pytest.mark.parametrize("progress_bar", [False, True])
def test_host_scalars_are_written_once_per_logging_step_with_the_epoch(
        tmp_path, monkeypatch: pytest.MonkeyPatch, progress_bar: bool) -> None:  # noqa: ANN001 (tmp_path)
    from recframe.config.compose import compose_config
    from recframe.training.app import _build_module, build_trainer
    from recframe.training.builders import build_datamodule

    writes: list[tuple[int, dict[str, Any]]] = []
    monkeypatch.setattr(RunLogger, "log_metrics", lambda self, metrics, step=None: writes.append((step, metrics)))
    cfg = compose_config([*TINY, f"run_dir={tmp_path}", f"trainer.enable_progress_bar={progress_bar}"])
    trainer = build_trainer(cfg, tmp_path, checkpoints=False)
    module = _build_module(cfg)
    trainer.fit(module, datamodule=build_datamodule(cfg))

    host = [(step, m) for step, m in writes if HOST_KEYS & set(m)]
    assert [step for step, _ in host] == [4, 9]  # the logging steps (global step + 1 divisible by 5), once each
    for _, metrics in host:
        assert set(metrics) == HOST_KEYS | {"epoch"} and metrics["epoch"] == 0
        assert all(isinstance(v, float) for k, v in metrics.items() if k != "epoch")
    assert host[0][1]["optim/lr_sparse"] == pytest.approx(cfg.optim.sparse.lr)
    assert module.logging_step_values == {}
    shown = trainer.progress_bar_metrics
    assert ("perf/samples_per_s" in shown and "train/loss" in shown) == progress_bar

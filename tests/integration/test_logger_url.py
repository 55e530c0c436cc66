"""TensorBoard event files at an fsspec URL (``logger.dir``, issue 20, item 3): a ``file://`` URL gets the scalars,
the hparams and the projector's files; the run directory gets no ``tensorboard/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import TINY, run_recframe
from tests.integration.test_train import small_model

pytestmark = pytest.mark.integration


@pytest.mark.slow  # ~8 s: a training run
def test_tensorboard_at_a_url(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, store = tmp_path / "run", tmp_path / "store" / "tb"
    done = run_recframe("train", "+experiment=dlrm", *small_model("dlrm"), *TINY, "trainer.max_steps=4",
                        "logger.projector.tables=[t_cat_0]", f"hydra.run.dir={run_dir}", f"logger.dir=file://{store}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (run_dir / "tensorboard").exists() and (run_dir / "metrics.json").is_file()
    events = sorted(store.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 1, 2, 3]
    assert (store / "projector_config.pbtxt").is_file() and (store / "hparams.yaml").is_file()

"""TensorBoard compares runs: a 2-value sweep gives two folders named by the swept key, one event file each, and
each event file holds the HPARAMS entry of its run (its knobs and overrides) with its final and best metrics."""

from __future__ import annotations

from pathlib import Path

from tests.integration.helpers import run_recframe


def hparams_of(events: Path) -> tuple[dict[str, object], dict[str, float]]:
    """The hparams (name -> value) of a run's HPARAMS entry, and its scalars under hparams/ (tag -> value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag in metric_tags}
    return values, scalars


def test_a_sweep_compares_its_runs_in_hparams(tmp_path: Path) -> None:
    done = run_recframe("train", "-m", "+experiment=dlrm", "tables.num_embeddings=1000", "data.batch_size=64",
                        "trainer.max_steps=6", "trainer.val_check_interval=6", "data.num_val_batches=2",
                        "trainer.enable_progress_bar=false", "logger.table_stats_every_n_steps=0",
                        "optim.sparse.lr=0.01,0.05", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0_lr=0.01", "1_lr=0.05"]
    seen = {}
    for run in runs:
        events = list((run / "tensorboard").glob("events.out.tfevents.*"))
        assert len(events) == 1, events  # the final validation and the hparams in the run's one file
        values, scalars = hparams_of(events[0])
        assert values["model.name"] == "dlrm" and values["tables.embedding_dim"] == 64
        assert values["data.batch_size"] == 64 and values["trainer.max_steps"] == 6  # an overridden key
        assert {"hparams/val/auc", "hparams/best/val/auc", "hparams/val/logloss"} <= set(scalars)
        seen[values["optim.sparse.lr"]] = scalars["hparams/val/auc"]
    assert set(seen) == {0.01, 0.05}

"""Checkpoints end to end through the CLI: kill -9 and resume, kill while writing, SIGTERM, eval, export."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recframe.training.checkpoint.folder import write_manifest
from tests.integration.helpers import run_recframe
from tests.unit.training.test_checkpoint_safety import Payload

pytestmark = pytest.mark.integration

SMALL = ["+experiment=dlrm", "model.bottom_mlp=[16,8]", "model.top_mlp=[16]", "tables.embedding_dim=8",
         "tables.num_embeddings=1000", "data.batch_size=64", "trainer.enable_progress_bar=false",
         "trainer.log_every_n_steps=1", "logger.table_stats_every_n_steps=0", "model.dropout=0.2"]


def start(*args: str) -> subprocess.Popen:
    """``recframe train ARGS`` in its own process group (so that a kill reaches every rank)."""
    return subprocess.Popen([sys.executable, "-m", "recframe", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0, poll: float = 0.05) -> bool:
    """Poll ``predicate()`` until it holds (True), the process ends or the time is up (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if predicate():
            return True
        time.sleep(poll)
    return False


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.communicate(timeout=60)


def newest_losses(run_dir: Path) -> dict[int, float]:
    """``train/loss`` by step from the newest TensorBoard event file of a run (the resumed run's)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {}
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/loss" in acc.Tags()["scalars"]:  # (validation after training writes a file of its own)
            losses = {e.step: e.value for e in acc.Scalars("train/loss")}
    return losses


@pytest.mark.slow
@pytest.mark.distributed
def test_sigkill_of_two_processes_then_resume_gives_the_same_losses(tmp_path: Path) -> None:
    common = [*SMALL, "trainer.devices=2", "sharding=row_wise", "trainer.max_steps=16",
              "trainer.val_check_interval=8", "data.num_val_batches=2", "checkpoint.every_n_steps=4"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_recframe("train", *common, f"hydra.run.dir={straight}")
    assert result.returncode == 0, result.stderr[-3000:]
    process = start(*common, f"hydra.run.dir={killed}")
    assert wait_for(lambda: (killed / "checkpoints" / "step-4" / "manifest.json").is_file(), process, poll=0.01)
    kill_group(process)
    assert process.returncode == -signal.SIGKILL
    rest = run_recframe("train", *common, f"hydra.run.dir={killed}", "ckpt_path=last")
    assert rest.returncode == 0, rest.stderr[-3000:]
    log = rest.stdout + rest.stderr
    resumed_from = int(log.split("resuming from ")[1].split("step ")[1].split(")")[0])
    assert 4 <= resumed_from < 16
    expected, got = newest_losses(straight), newest_losses(killed)
    steps = list(range(resumed_from, 16))
    assert sorted(got) == steps
    assert [got[s] for s in steps] == [expected[s] for s in steps], "losses after resume must be the same"
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((killed / "metrics.json").read_text())


def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path: Path) -> None:
    # Checkpoints every step of a model with bigger tables: the writes take most of the time. Kill the
    # process as soon as an unfinished checkpoint folder appears (retried if the write won the race).
    common = [*SMALL, "tables.num_embeddings=40000", "tables.row_cap=40000", "trainer.max_steps=40",
              "trainer.val_check_interval=40", "data.num_val_batches=1", "checkpoint.every_n_steps=1",
              "checkpoint.keep_last=1"]
    run_dir = tmp_path / "run"
    root = run_dir / "checkpoints"
    for attempt in range(4):
        process = start(*common, f"hydra.run.dir={run_dir}", *(["ckpt_path=last"] if attempt else []))
        caught = wait_for(lambda: any(root.glob("step-*")) and any(root.glob(".tmp-step-*")), process, poll=0.001)
        kill_group(process)
        if caught and list(root.glob(".tmp-step-*")):
            break
    unfinished = sorted(root.glob(".tmp-step-*"))
    assert unfinished, "could not kill the process while it wrote a checkpoint"
    complete = sorted(root.glob("step-*"), key=lambda p: int(p.name.removeprefix("step-")))
    assert complete
    rest = run_recframe("train", *common, "trainer.max_steps=3", f"hydra.run.dir={run_dir}", "ckpt_path=last",
                        "checkpoint.every_n_steps=0")
    previous = complete[-1].name
    assert rest.returncode == 0, rest.stderr[-3000:]  # trains on to step 3, or has nothing left to train
    log = rest.stdout + rest.stderr
    assert "unfinished checkpoint" in log and unfinished[-1].name in log
    assert f"resuming from {root / previous}" in log


def test_sigterm_writes_a_final_checkpoint_and_exits_143(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start(*SMALL, "trainer.devices=2", "sharding=table_wise", "trainer.max_steps=100000",
                    "trainer.val_check_interval=100000", "data.num_val_batches=1", "checkpoint.every_n_steps=3",
                    f"hydra.run.dir={run_dir}")
    assert wait_for(lambda: (run_dir / "checkpoints" / "step-3" / "manifest.json").is_file(), process)
    os.kill(process.pid, signal.SIGTERM)  # rank 0 only: rank 1 learns it at the next step boundary
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "SIGTERM: wrote the checkpoint of step" in stdout + stderr
    steps = sorted(int(p.name.removeprefix("step-")) for p in (run_dir / "checkpoints").glob("step-*"))
    assert steps[-1] > 3, "a final checkpoint past the periodic one"
    final = run_dir / "checkpoints" / f"step-{steps[-1]}"
    assert json.loads((final / "manifest.json").read_text())["world_size"] == 2
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in final.iterdir()}
    def group_gone() -> bool:
        return not subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 30
    while not group_gone() and time.monotonic() < deadline:  # rank 1 finishes its own exit
        time.sleep(0.2)
    assert group_gone(), "processes left behind"


def test_eval_and_export_of_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from recframe.training.builders import build_datamodule
    from recframe.training.export import export_command, load_exported
    from recframe.training.metrics import binary_auc

    run_dir = tmp_path / "run"
    train = run_recframe("train", *SMALL, "trainer.max_steps=4", "trainer.val_check_interval=4",
                         "data.num_val_batches=2", f"hydra.run.dir={run_dir}")
    assert train.returncode == 0, train.stderr[-3000:]
    folder = run_dir / "checkpoints" / "step-4"
    evaluated = run_recframe("eval", *SMALL, "data.num_val_batches=2", f"ckpt_path={folder}",
                             f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["val/auc"] == trained["val/auc"]
    out = tmp_path / "model.pt"
    exported = run_recframe("export", f"ckpt={folder}", f"out={out}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    model, cfg = load_exported(out)  # one process, no training world
    predictions, labels = [], []
    with torch.no_grad():
        for batch in build_datamodule(cfg).val_dataloader():
            predictions.append(model(batch).view(-1))
            labels.append(batch.labels.view(-1))
    auc = float(binary_auc(torch.cat(predictions), torch.cat(labels)))
    assert auc == pytest.approx(metrics["val/auc"], abs=1e-6)
    unwritable = out / "model.pt"  # a file where the folder should be
    assert export_command([f"ckpt={folder}", f"out={unwritable}"]) == 2
    assert f"recframe export: cannot write {unwritable}: " in capsys.readouterr().err


def test_eval_needs_a_complete_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "step-3").mkdir()
    result = run_recframe("eval", *SMALL, f"ckpt_path={tmp_path / 'step-3'}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 2
    assert "has no manifest.json: it was not finished" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.distributed
def test_two_rank_row_wise_checkpoint_evaluates_equally_on_one_and_three_ranks(tmp_path: Path) -> None:
    # 6 validation batches in all, whatever the world size (data.num_val_batches is per rank)
    run_dir = tmp_path / "run"
    train = run_recframe("train", *SMALL, "trainer.devices=2", "sharding=row_wise",
                         "trainer.max_steps=6", "trainer.val_check_interval=6", "data.num_val_batches=3",
                         f"hydra.run.dir={run_dir}")
    assert train.returncode == 0, train.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())
    folder = run_dir / "checkpoints" / "step-6"
    for world, sharding in ((1, "auto"), (3, "table_wise")):
        out = tmp_path / f"eval{world}"
        result = run_recframe("eval", *SMALL, f"trainer.devices={world}", f"sharding={sharding}",
                              f"data.num_val_batches={6 // world}", f"ckpt_path={folder}", f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["val/num_samples"] == trained["val/num_samples"] == 6 * 64
        for key in ("val/auc", "val/ne", "val/logloss", "val/calibration", "val/ctr"):
            assert round(metrics[key], 6) == round(trained[key], 6), (world, key, metrics[key], trained[key])


def test_a_crafted_checkpoint_is_refused_by_eval_and_runs_nothing(tmp_path: Path) -> None:
    import torch

    from recframe.training.checkpoint.writer import save

    folder = save({"state_dict": {"model.w": torch.zeros(2)}, "global_step": 4}, tmp_path / "ck", 4,
                  layout=None, keep_last=1)
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))  # a pickle payload, and a manifest to match
    (folder / "manifest.json").unlink()
    write_manifest(folder, {"global_step": 4})
    result = run_recframe("eval", *SMALL, "data.num_val_batches=2", f"ckpt_path={folder}",
                          f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "posix.system" in result.stderr and "refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()

"""An S3 bucket of a local S3-compatible server (moto) (issue 20): checkpoints there (kill while writing, resume),
a tabular run with every path there, a preprocessed Criteo dataset there read by two ranks through one local copy.

Needs two things the default environment does not have, so it is ``slow`` and skips without them:

- ``s3fs`` for the recframe processes (``pip install 'recframe[s3]'``), importable in this venv or from the
  folder in ``RECFRAME_S3FS_PATH`` (put on their PYTHONPATH);
- a moto server (``pip install 'moto[server]'``): started by the test on 127.0.0.1 with a random port, from
  ``RECFRAME_MOTO_PATH`` (a folder put on the server's PYTHONPATH) or this venv. moto[server] pins
  antlr4-python3-runtime 4.13, which breaks hydra-core 1.3's pin (4.9): install it into a folder of its own
  (``pip install --target DIR 'moto[server]'``), not into the project's venv.

Example:
    $ pip install --target /tmp/moto 'moto[server]' && pip install --target /tmp/s3fs s3fs==<fsspec's version>
    $ RECFRAME_MOTO_PATH=/tmp/moto RECFRAME_S3FS_PATH=/tmp/s3fs pytest -m slow tests/integration/test_s3.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_checkpoints import SMALL, kill_group, newest_losses, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMMON = [*SMALL, "trainer.max_steps=12",
          "trainer.val_check_interval=6", "data.num_val_batches=2", "checkpoint.every_n_steps=1",
          "checkpoint.keep_last=2"]


def python_path(variable: str) -> dict[str, str]:
    extra = os.environ.get(variable, "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH", "")) if p)}


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The server's URL and the environment of a recframe process that uses it; stopped afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    client = {**python_path("RECFRAME_S3FS_PATH"), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    if subprocess.run([sys.executable, "-c", "import s3fs"], env=client, capture_output=True).returncode:
        pytest.skip("s3fs is not installed (pip install 'recframe[s3]', or set RECFRAME_S3FS_PATH)")
    log = tmp_path / "moto.log"  # a file, not a pipe: the server logs every request, a full pipe would stop it
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=python_path("RECFRAME_MOTO_PATH"), stdout=subprocess.DEVNULL,
                              stderr=log.open("w"))
    try:
        for _ in range(200):
            if server.poll() is not None:
                pytest.skip(f"no moto server (pip install 'moto[server]' into RECFRAME_MOTO_PATH): "
                            f"{log.read_text()[-300:]}")
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(f"{endpoint}/bucket", method="PUT")  # create the bucket
        urllib.request.urlopen(request, timeout=10)
        yield endpoint, client
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def keys(endpoint: str, prefix: str) -> list[str]:
    """Every object key under ``prefix`` (S3's ListObjectsV2, unsigned: moto does not check signatures)."""
    with urllib.request.urlopen(f"{endpoint}/bucket?list-type=2&max-keys=1000&prefix={prefix}", timeout=120) as r:
        return re.findall(r"<Key>([^<]+)</Key>", r.read().decode())


def unfinished(names: list[str]) -> list[str]:
    """The ``step-N`` folders with files but no manifest.json."""
    steps = {n.split("/")[-2] for n in names if re.search(r"/step-\d+/[^/]+$", n)}
    return sorted(s for s in steps if not any(n.endswith(f"/{s}/manifest.json") for n in names))


def test_killed_while_writing_to_s3_resumes_to_the_same_metrics(s3: tuple[str, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    endpoint, env = s3
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run([sys.executable, "-m", "recframe", "train", *COMMON, f"hydra.run.dir={straight}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    url, prefix = "s3://bucket/run1/checkpoints", "run1/checkpoints/"
    caught: list[str] = []
    for attempt in range(4):  # kill as soon as a step-N has files but no manifest (retried if the write won)
        process = subprocess.Popen([sys.executable, "-m", "recframe", "train", *COMMON, f"hydra.run.dir={killed}",
                                    f"checkpoint.dir={url}", *(["ckpt_path=last"] if attempt else [])], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        wait_for(lambda: bool(unfinished(keys(endpoint, prefix))) and any(
            k.endswith("/manifest.json") for k in keys(endpoint, prefix)), process, poll=0.01)
        kill_group(process, signal.SIGKILL)
        caught = unfinished(keys(endpoint, prefix))
        if caught:
            break
    assert caught, "could not kill the process while it wrote a checkpoint"
    rest = subprocess.run([sys.executable, "-m", "recframe", "train", *COMMON, f"hydra.run.dir={killed}",
                           f"checkpoint.dir={url}", "ckpt_path=last"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert rest.returncode == 0, rest.stderr[-3000:]
    log = rest.stdout + rest.stderr
    assert f"{url}/{caught[-1]} has no manifest.json: it was not finished" in log, "the unfinished step is passed over"
    resumed_from = int(re.search(r"\(resuming from s3://\S+, step (\d+)\)", log).group(1))
    assert f"set aside the abandoned run's newer checkpoint as {url}/abandoned-{caught[-1]}-" in log
    assert resumed_from < int(caught[-1].removeprefix("step-"))
    expected, got = newest_losses(straight), newest_losses(killed)
    assert [got[s] for s in range(resumed_from, 12)] == [expected[s] for s in range(resumed_from, 12)]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert {k: round(v, 6) for k, v in a.items()} == {k: round(v, 6) for k, v in b.items()}
    final = keys(endpoint, prefix)
    assert f"{prefix}step-12/manifest.json" in final and f"{prefix}step-11/manifest.json" in final
    assert not unfinished([k for k in final if "/abandoned-" not in k]), "keep_last pruned the leftovers"


def put(env: dict[str, str], key: str, file: Path) -> None:
    """Upload through s3fs (moto stores the body of an unsigned PUT as empty)."""
    script = "import fsspec, sys; fsspec.filesystem('s3').put_file(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", script, str(file), f"bucket/{key}"], env=env, check=True, timeout=120)


def get(env: dict[str, str], key: str) -> bytes:
    script = "import fsspec, sys; sys.stdout.buffer.write(fsspec.filesystem('s3').cat_file(sys.argv[1]))"
    return subprocess.run([sys.executable, "-c", script, f"bucket/{key}"], env=env, check=True, timeout=120,
                          capture_output=True).stdout


def test_train_from_a_csv_in_the_bucket_export_and_predict_there(s3: tuple[str, dict[str, str]],
                                                                  tmp_path: Path) -> None:
    from tests.integration.test_predict import QUICK, write_table

    endpoint, env = s3
    write_table(tmp_path / "train.csv", 300, seed=0)
    write_table(tmp_path / "new.csv", 40, seed=1)
    (tmp_path / "spec.yaml").write_text("label: click\ndense: {price: {}}\ncategorical: {user: {rows: 50}, "
                                        "item: {rows: 50}}\n")
    for name in ("train.csv", "new.csv", "spec.yaml"):
        put(env, f"data/{name}", tmp_path / name)

    def recframe(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "recframe", *args], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    quick = [a for a in QUICK if a != "logger.tensorboard=false"]
    for where, data in (("local", str(tmp_path)), ("s3", "s3://bucket/data")):
        out = "s3://bucket/run2" if where == "s3" else str(tmp_path / "local")
        checkpoints = f"{out}/checkpoints" if where == "s3" else f"{tmp_path / 'local' / 'run'}/checkpoints"
        recframe("train", "+experiment=tabular", f"data.path={data}/train.csv", f"data.spec={data}/spec.yaml",
                 *quick, f"hydra.run.dir={tmp_path / where / 'run'}", f"checkpoint.dir={checkpoints}",
                 f"logger.dir={out}/tb")
        recframe("export", f"ckpt={checkpoints}/step-6", f"out={out}/model.pt2", "format=exported")
        recframe("predict", f"model={out}/model.pt2", f"input={data}/new.csv", f"out={out}/scores.csv")
    assert get(env, "run2/scores.csv") == (tmp_path / "local" / "scores.csv").read_bytes()
    names = keys(endpoint, "run2/")
    assert "run2/checkpoints/step-6/manifest.json" in names and "run2/model.pt2" in names
    assert any(n.startswith("run2/tb/events.out.tfevents.") for n in names), "TensorBoard wrote to the bucket"
    local = json.loads((tmp_path / "local" / "run" / "metrics.json").read_text())
    assert json.loads((tmp_path / "s3" / "run" / "metrics.json").read_text()) == local


def test_two_ranks_train_from_a_preprocessed_dataset_in_the_bucket(s3: tuple[str, dict[str, str]],
                                                                  tmp_path: Path) -> None:
    """The endpoint comes from storage.options only; the ranks share one download to storage.cache_dir."""
    from tests.integration.test_data_urls import SMALL as BINARY
    from tests.unit.data.test_arrays import write_tsv

    endpoint, env = s3
    env = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"}
    write_tsv(tmp_path / "train.txt", 600, seed=3)

    def recframe(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "recframe", *args], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    option = f"storage.options.s3.endpoint_url={endpoint}"
    for out in ("s3://bucket/bin", str(tmp_path / "bin")):
        recframe("preprocess", "criteo", "--input", str(tmp_path / "train.txt"), "--output", out, "--workers", "1",
                 "--quiet", option)
    assert "bin/feature_map.json" in keys(endpoint, "bin/")
    common = [*BINARY, "trainer.devices=2", "trainer.enable_progress_bar=false", "checkpoint.every_n_steps=0",
              f"storage.cache_dir={tmp_path / 'cache'}"]
    recframe("train", *common, f"data.path={tmp_path / 'bin'}", f"hydra.run.dir={tmp_path / 'local'}")
    log = recframe("train", *common, "data.path=s3://bucket/bin", f"+{option}", f"hydra.run.dir={tmp_path / 's3'}")
    assert len(re.findall(r"copied s3://bucket/bin \(4 files", log)) == 1, "one rank downloads, the other waits"
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert json.loads((tmp_path / "s3" / "metrics.json").read_text()) == local

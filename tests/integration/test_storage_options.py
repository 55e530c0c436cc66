"""``storage.options`` reach every filesystem a command opens (issue 20): a store that refuses anyone without its
token (``recframespy://``, an in-memory fsspec filesystem registered here) holds the preprocessed data, the
checkpoints, the TensorBoard files and the export of a run; each command gets the token only from
``storage.options``. In this process: the store lives in memory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from recframe import storage
from recframe.cli import main
from recframe.training.checks import find_problems
from tests.in_process import train_in_process
from tests.integration.test_data_urls import QUIET, SMALL
from tests.unit.data.test_arrays import write_tsv

pytestmark = pytest.mark.integration

PROTOCOL = "recframespy"


class NeedsToken(MemoryFileSystem):
    """``memory://`` under another name, that records its options and refuses to open without ``token=abc``."""

    protocol = (PROTOCOL,)
    made: list[dict[str, Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        NeedsToken.made.append(dict(kwargs))
        if kwargs.get("token") != "abc":
            raise PermissionError(f"{PROTOCOL}:// needs token=abc, got options {kwargs}")
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        return MemoryFileSystem._strip_protocol(str(path).removeprefix(f"{PROTOCOL}://"))


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh ``recframespy://`` bucket; the protocol registered by name (TensorBoard's gfile asks fsspec by name),
    fsspec's configuration restored afterwards."""
    from fsspec.registry import _registry, known_implementations

    saved = {k: dict(v) for k, v in fsspec.config.conf.items()}
    fsspec.register_implementation(PROTOCOL, f"{__name__}.NeedsToken", clobber=True)
    NeedsToken.made.clear()
    name = f"bucket-{uuid.uuid4().hex[:8]}"
    yield f"{PROTOCOL}://{name}"
    storage.rmtree(f"memory://{name}")
    fsspec.config.conf.clear()
    fsspec.config.conf.update(saved)
    known_implementations.pop(PROTOCOL, None)
    _registry.pop(PROTOCOL, None)


def forget_options() -> None:
    """Drop what the last command set, so the next one has only its own."""
    fsspec.config.conf.pop(PROTOCOL, None)


def test_every_url_of_a_run_opens_with_the_storage_options(bucket: str, tmp_path: Path) -> None:
    token = f"storage.options.{PROTOCOL}.token=abc"
    urls = [f"data.path={bucket}/bin", f"checkpoint.dir={bucket}/ck", f"logger.dir={bucket}/tb"]
    write_tsv(tmp_path / "train.txt", 300, seed=3)
    preprocess = ["preprocess", "criteo", "--input", str(tmp_path / "train.txt"), "--output", f"{bucket}/bin",
                  "--workers", "1", "--quiet"]
    with pytest.raises(PermissionError):
        main(preprocess)  # without the token, the store refuses
    forget_options()
    assert main([*preprocess, token]) == 0
    forget_options()
    assert [p.key for p in find_problems([*SMALL, *urls])] == ["data.path"]  # no token: feature_map.json unreadable

    metrics = train_in_process([*SMALL, *urls, f"+{token}", f"storage.cache_dir={tmp_path / 'cache'}", *QUIET,
                                "logger.tensorboard=true", "checkpoint.every_n_steps=4"], tmp_path / "run")
    assert metrics["global_step"] == 4
    assert storage.is_file(f"{bucket}/ck/step-4/manifest.json")
    assert any(name.startswith("events.out.tfevents") for name, _ in storage.children(f"{bucket}/tb"))

    forget_options()
    assert main(["export", f"ckpt={bucket}/ck/step-4", f"out={bucket}/model.pt", token]) == 0
    assert storage.size(f"{bucket}/model.pt") > 0
    refused = [options for options in NeedsToken.made if options.get("token") != "abc"]
    assert len(refused) == 2 and len(NeedsToken.made) > len(refused)  # the two tries without the token, only

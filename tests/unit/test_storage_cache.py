"""Local copies of remote datasets (``recframe.storage_cache``): downloaded once per version, fetched again when
the dataset changes, never taken from a download that was cut short, one download per machine (issue 20)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from recframe import storage, storage_cache
from recframe.storage_cache import local_copy


@pytest.fixture
def remote() -> Iterator[str]:
    """A ``memory://`` folder with two files, removed afterwards."""
    url = f"memory://cache-test-{uuid.uuid4().hex[:8]}/data"
    storage.write_bytes(f"{url}/big.npy", b"x" * 1000)
    storage.write_bytes(f"{url}/sub/feature_map.json", b'{"rows": 1}')
    yield url
    storage.rmtree(storage.parent(url))


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs ``local_copy`` downloads, in order."""
    seen: list[str] = []
    real = storage_cache._download

    def counting(url: str, *args: object) -> None:
        seen.append(url)
        real(url, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(storage_cache, "_download", counting)
    return seen


def test_a_local_path_is_itself(tmp_path: Path) -> None:
    assert local_copy(str(tmp_path / "x"), tmp_path / "cache") == tmp_path / "x"
    assert not (tmp_path / "cache").exists()


def test_the_copy_is_reused_and_fetched_again_when_the_dataset_changes(remote: str, downloads: list[str],
                                                                      tmp_path: Path) -> None:
    first = local_copy(remote, tmp_path)
    assert first.name == "data" and (first / "big.npy").read_bytes() == b"x" * 1000
    assert (first / "sub" / "feature_map.json").read_text() == '{"rows": 1}'
    assert local_copy(remote, tmp_path) == first and downloads == [remote]  # the same version: no download
    time.sleep(0.01)  # memory:// versions files by their creation time
    storage.write_bytes(f"{remote}/sub/feature_map.json", b'{"rows": 2}')  # the dataset is written again
    second = local_copy(remote, tmp_path)
    assert second != first and downloads == [remote, remote]
    assert (second / "sub" / "feature_map.json").read_text() == '{"rows": 2}'
    assert not first.exists(), "the older version is deleted once the new one is complete"
    assert local_copy(f"{remote}/big.npy", tmp_path).read_bytes() == b"x" * 1000  # a single file too


def test_a_failed_download_is_never_taken_for_a_complete_copy(remote: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    memory = type(fsspec.filesystem("memory"))
    real, calls = memory.get_file, []

    def cut_short(self: object, source: str, target: str, **kwargs: object) -> None:
        calls.append(source)
        if len(calls) == 2:
            Path(target).write_bytes(b"half")
            raise ConnectionError("connection reset")
        real(self, source, target, **kwargs)

    monkeypatch.setattr(memory, "get_file", cut_short)
    with pytest.raises(ConnectionError):
        local_copy(remote, tmp_path)
    root = next(tmp_path.iterdir())
    assert [p.name.startswith(".partial-") for p in root.iterdir() if p.is_dir()] == [True]  # no version folder
    monkeypatch.setattr(memory, "get_file", real)
    copy = local_copy(remote, tmp_path)
    assert (copy / "sub" / "feature_map.json").read_text() == '{"rows": 1}'
    assert [p.name for p in root.iterdir() if p.name.startswith(".partial-")] == [], "the leftover is cleared"


def test_a_short_file_is_refused(remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = type(fsspec.filesystem("memory"))
    monkeypatch.setattr(memory, "get_file", lambda self, source, target, **kw: Path(target).write_bytes(b"short"))
    with pytest.raises(OSError, match="downloaded 5 bytes of 1000"):
        local_copy(remote, tmp_path)


# A process killed in the middle of a download (file:// so that it reaches across processes): SIGKILL after the
# first file, inside the lock.
KILLED = """
import os, signal, sys
import fsspec
from recframe.storage_cache import local_copy
local = type(fsspec.filesystem("file"))
real = local.get_file
def die_after_one(self, source, target, **kw):
    real(self, source, target, **kw)
    os.kill(os.getpid(), signal.SIGKILL)
local.get_file = die_after_one
local_copy(sys.argv[1], sys.argv[2])
"""


def test_a_killed_download_leaves_no_copy_and_the_next_process_makes_one(tmp_path: Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.npy").write_bytes(b"a" * 100)
    (tmp_path / "data" / "sub" / "b.npy").write_bytes(b"b" * 100)
    url, cache = f"file://{tmp_path / 'data'}", tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", KILLED, url, str(cache)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr[-2000:]
    root = next(cache.iterdir())
    names = sorted(p.name for p in root.iterdir())
    assert len(names) == 2 and names[0] == ".lock" and names[1].startswith(".partial-"), names  # no version folder
    copy = local_copy(url, cache)  # the dead process's lock is free: this one downloads
    assert (copy / "a.npy").read_bytes() == b"a" * 100 and (copy / "sub" / "b.npy").read_bytes() == b"b" * 100


WAITER = """
import json, sys
from recframe import storage_cache
ran = []
real = storage_cache._download
storage_cache._download = lambda *a: (ran.append(1), real(*a))
copy = storage_cache.local_copy(sys.argv[1], sys.argv[2])
print(json.dumps([str(copy), len(ran)]))
"""


def test_one_process_downloads_the_others_wait_and_find_its_copy(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.npy").write_bytes(b"a" * 100)
    url, cache = f"file://{tmp_path / 'data'}", tmp_path / "cache"
    listing = storage_cache.remote_listing(url)
    version, root = storage_cache._hash([url, listing]), cache / f"data-{storage_cache._hash(url)}"
    root.mkdir(parents=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # this process is downloading
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, url, str(cache)], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": os.getcwd()})
        time.sleep(1.5)
        assert waiter.poll() is None, "the other process waits for the lock"
        storage_cache._download(url, listing, root, version, "data")
    out, _ = waiter.communicate(timeout=60)
    assert out.strip() == f'["{root / version / "data"}", 0]', "it finds the copy and downloads nothing"

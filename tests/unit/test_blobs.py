"""The blob store: atomic durable files, strict ids, sharding, and the start-up sweep."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from telentir.errors import InsufficientStorage
from telentir.storage import blobs as blobs_module
from telentir.storage.blobs import FileBlobStore


@pytest.fixture
def store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- write / read / delete ------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"ciphertext" * 1000, bytes(range(256)) * 300])
def test_write_then_read_gives_the_same_bytes(store, data):
    blob_id = store.write(data)
    assert store.read(blob_id) == data
    assert store.path_for(blob_id).read_bytes() == data


def test_each_write_gets_a_fresh_id(store):
    ids = {store.write(b"same") for _ in range(20)}
    assert len(ids) == 20


def test_ids_are_url_safe_and_not_derived_from_content(store):
    blob_id = store.write(b"x")
    assert blobs_module.BLOB_ID.fullmatch(blob_id)
    assert store.write(b"x") != blob_id


def test_delete_removes_the_file_and_is_idempotent(store):
    blob_id = store.write(b"bye")
    path = store.path_for(blob_id)
    store.delete(blob_id)
    assert not path.exists()
    store.delete(blob_id)  # already gone: no error
    with pytest.raises(FileNotFoundError):
        store.read(blob_id)


def test_delete_many(store):
    ids = [store.write(bytes([n])) for n in range(5)]
    store.delete_many(ids[:3])
    assert [store.path_for(i).exists() for i in ids] == [False, False, False, True, True]


def test_sharded_layout(store):
    blob_id = store.write(b"data")
    expected = store.root / blob_id[:2] / blob_id
    assert store.path_for(blob_id) == expected
    assert expected.is_file()
    assert _all_files(store.root) == [expected]


def test_no_temp_file_is_left_after_a_write(store):
    for n in range(10):
        store.write(b"payload %d" % n)
    names = [p.name for p in _all_files(store.root)]
    assert len(names) == 10
    assert not [n for n in names if n.endswith(".tmp")]


def test_a_failed_write_leaves_no_temp_file(store, monkeypatch):
    store.write(b"first")  # the shard folders exist from now on

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(InsufficientStorage):  # a full disk is a 507, not an unexplained 500
        store.write(b"second")
    assert not [p for p in _all_files(store.root) if p.name.endswith(".tmp")]


def test_written_files_are_not_world_writable(store):
    mode = stat.S_IMODE(store.path_for(store.write(b"x")).stat().st_mode)
    assert not mode & stat.S_IWOTH


# --- hostile ids ----------------------------------------------------------------------

HOSTILE_IDS = [
    "../x",
    "a/b",
    "..",
    ".",
    "",
    "/etc/passwd",
    "..\\..\\x",
    "abc",
    "x" * 19,
    "x" * 65,
    "A" * 20 + "/",
    "A" * 20 + "\n",
    "\n" + "A" * 20,
    "A" * 20 + "\x00",
    "é" * 24,
    "ＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡＡ",
    "٠" * 24,
    "A" * 10 + "." + "A" * 10,
    "A" * 20 + ".tmp",
    "x" * 10_000,
    None,
    12345678901234567890123,
    b"A" * 24,
]


class _NoPathsAllowed:
    """A root that fails the test if anyone builds a path from it."""

    def __truediv__(self, other: Any) -> Any:
        raise AssertionError(f"a path was built for {other!r}")


@pytest.mark.parametrize("blob_id", HOSTILE_IDS, ids=lambda v: repr(v)[:30])
def test_hostile_ids_are_refused_before_any_path_is_built(store, blob_id):
    store.root = _NoPathsAllowed()  # type: ignore[assignment]
    with pytest.raises(ValueError):
        store.path_for(blob_id)
    with pytest.raises(ValueError):
        store.read(blob_id)
    with pytest.raises(ValueError):
        store.delete(blob_id)


def test_hostile_ids_never_touch_the_disk(store, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not read or delete")
    for blob_id in ("../secret", "../../secret", str(secret)):
        with pytest.raises(ValueError):
            store.read(blob_id)
        with pytest.raises(ValueError):
            store.delete(blob_id)
    assert secret.read_bytes() == b"do not read or delete"


# --- the sweep ------------------------------------------------------------------------


def test_sweep_removes_unreferenced_blobs_and_temp_files_only(store):
    kept = [store.write(b"kept %d" % n) for n in range(3)]
    orphans = [store.write(b"orphan %d" % n) for n in range(2)]
    shard = store.path_for(kept[0]).parent
    temp = shard / f"{kept[0]}.0123abcd.tmp"
    temp.write_bytes(b"half written")
    foreign = [
        shard / "README",
        shard / ".DS_Store",
        store.root / "notes.txt",
        shard / "short",
        shard / (kept[0] + ".bak"),
        shard / "x.tmp",
    ]
    for path in foreign:
        path.write_bytes(b"not ours")

    removed = store.sweep(set(kept).__contains__)

    assert removed == len(orphans) + 1
    assert all(store.read(i) == b"kept %d" % n for n, i in enumerate(kept))
    assert not any(store.path_for(i).exists() for i in orphans)
    assert not temp.exists()
    assert all(path.read_bytes() == b"not ours" for path in foreign)


def test_sweep_of_a_missing_root_is_a_no_op(tmp_path):
    assert FileBlobStore(tmp_path / "never-created").sweep(lambda _: False) == 0


def test_sweep_with_everything_referenced_removes_nothing(store):
    ids = [store.write(b"%d" % n) for n in range(5)]
    assert store.sweep(lambda _: True) == 0
    assert len(_all_files(store.root)) == len(ids)


def test_iter_files_includes_temp_files(store):
    blob_id = store.write(b"x")
    temp = store.path_for(blob_id).with_name(f"{blob_id}.deadbeef.tmp")
    temp.write_bytes(b"")
    assert sorted(store.iter_files()) == sorted([store.path_for(blob_id), temp])


# --- durability -----------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch) -> list[str]:
    """Every os.fsync call, recorded as "file" or "dir"."""
    calls: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_each_write_fsyncs_the_file_then_its_folder(store, fsyncs, monkeypatch):
    ids = iter(["AAAA" + "x" * 20, "AAAA" + "y" * 20, "AAAA" + "z" * 20])
    monkeypatch.setattr(store, "new_id", lambda: next(ids))
    store.write(b"first")  # creates root, root/AA, root/AA/AA: each new folder's parent is synced
    fsyncs.clear()
    store.write(b"second")
    assert fsyncs == ["file", "dir"]
    fsyncs.clear()
    store.write(b"third")
    assert fsyncs == ["file", "dir"]


def test_new_folders_are_made_durable_too(store, fsyncs):
    store.write(b"first")
    # root and the shard folder: two new folders, each synced in its parent, then file + folder
    assert fsyncs == ["dir", "dir", "file", "dir"]


def test_non_durable_store_never_fsyncs(tmp_path, fsyncs):
    store = FileBlobStore(tmp_path / "fast", durable=False)
    blob_id = store.write(b"quick")
    assert store.read(blob_id) == b"quick"
    assert fsyncs == []


def test_file_is_fsynced_before_the_rename(store, monkeypatch):
    ids = iter(["BBBB" + "x" * 20, "BBBB" + "y" * 20])
    monkeypatch.setattr(store, "new_id", lambda: next(ids))
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("dir-fsync" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file-fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename")
        real_replace(src, dst)

    store.write(b"warm up")  # folders exist
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.write(b"ordered")
    assert events == ["file-fsync", "rename", "dir-fsync"]

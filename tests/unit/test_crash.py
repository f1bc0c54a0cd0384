"""Crash safety at the storage level: SIGKILL a writer mid-loop, then start up and check.

The writer does what the object service does for each write: make the blob durable, then
commit the row that names it. Whatever instant the kill lands on, after start-up every
committed row has its file with the right bytes, and no file is left that no row names.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from telentir.config import Config
from telentir.serving import prepare
from telentir.storage.blobs import FileBlobStore
from telentir.storage.db import SqliteDatabase

from ..support import ROOT, config_over, wait_for_output

WRITER = textwrap.dedent("""
    import hashlib, sys
    sys.path.insert(0, sys.argv[3])
    from telentir.ids import new_id, now_iso
    from telentir.storage.blobs import FileBlobStore
    from telentir.storage.db import SqliteDatabase

    def payload(object_id):
        seed = hashlib.sha256(object_id.encode()).digest()
        return seed * (1 + seed[0] * 40)  # 32 bytes to ~260 kB, so kills land mid-write too

    db = SqliteDatabase(sys.argv[1])
    db.open_schema()
    blobs = FileBlobStore(sys.argv[2])
    user_id = new_id("usr")
    with db.atomic() as tx:
        tx.execute("INSERT INTO users (id, email, phone, plan, created_at) VALUES (?, ?, ?, ?, ?)",
                   (user_id, user_id + "@example.com", "+15555550100", "starter", now_iso()))
    print("ready", flush=True)
    while True:
        object_id = new_id("obj")
        data = payload(object_id)
        blob = blobs.write(data)
        now = now_iso()
        with db.atomic() as tx:
            tx.execute("INSERT INTO objects (id, user_id, key_id, blob, size, auth_tag, metadata, created_at, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                       (object_id, user_id, new_id("key"), blob, len(data), bytes(16), now, now))
        print(object_id, flush=True)
""")


def expected_payload(object_id: str) -> bytes:
    seed = hashlib.sha256(object_id.encode()).digest()
    return seed * (1 + seed[0] * 40)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_over(tmp_path / "data", log_level="WARNING")


def run_writer_and_kill(tmp_path: Path, config: Config, delay: float) -> list[str]:
    """Start the writer, let it run `delay` seconds once ready, SIGKILL it; the ids it reported."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    out_path = tmp_path / "writer.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(config.database_path), str(config.blob_path), str(ROOT)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_output(proc, out_path, b"ready\n", timeout=20.0, interval=0.02)
        time.sleep(delay)  # the point: the kill lands at a different moment of the write loop for each delay
        assert proc.poll() is None, out_path.read_text()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    lines = out_path.read_text().splitlines()
    assert lines[0] == "ready", lines[:5]
    # the last line may be cut short by the kill: keep only whole ids
    return [line for line in lines[1:] if len(line) == 26 and line.startswith("obj_")]


def _blob_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("delay", [0.35, 0.9, 1.5])
def test_sigkill_mid_write_leaves_consistent_storage(tmp_path, config, delay):
    committed = run_writer_and_kill(tmp_path, config, delay)
    assert len(committed) >= 3, "the writer committed too little to prove anything"

    # litter a crash can leave: a blob whose row never committed, and a half-written temp file
    store = FileBlobStore(config.blob_path)
    orphan = store.write(b"never committed")
    temp = store.path_for(orphan).with_name(f"{'T' * 24}.0badc0de.tmp")
    temp.write_bytes(b"half")

    report = prepare(config)

    db = SqliteDatabase(config.database_path)
    try:
        rows = {r["id"]: (r["blob"], r["size"]) for r in db.query("SELECT id, blob, size FROM objects")}
        integrity = db.query_one("PRAGMA integrity_check")[0]
    finally:
        db.close()
    assert integrity == "ok"
    # every id the writer saw committed is there, with its file and its exact bytes
    missing = [object_id for object_id in committed if object_id not in rows]
    assert missing == []
    for object_id, (blob, size) in rows.items():
        path = store.path_for(blob)
        assert path.is_file(), f"row {object_id} points at a missing file"
        data = path.read_bytes()
        assert len(data) == size and data == expected_payload(object_id), object_id
    # nothing is left that no row names: the orphan and the temp file went, and whatever the kill left
    referenced = {store.path_for(blob) for blob, _ in rows.values()}
    assert _blob_files(config.blob_path) == referenced
    assert report["swept_blobs"] >= 2
    assert not store.path_for(orphan).exists() and not temp.exists()


def test_prepare_twice_after_a_crash_finds_nothing_more(tmp_path, config):
    run_writer_and_kill(tmp_path, config, 0.3)
    prepare(config)
    assert prepare(config)["swept_blobs"] == 0


# --- failed transactions --------------------------------------------------------------


def _insert_orphan_api_key(tx: object) -> None:
    # Deferred foreign keys are checked at COMMIT, so this makes the COMMIT itself fail.
    tx.execute("PRAGMA defer_foreign_keys = ON")  # type: ignore[attr-defined]
    tx.execute(
        "INSERT INTO api_keys (id, user_id, name, key_hash, created_at) "  # type: ignore[attr-defined]
        "VALUES ('ak_x', 'usr_nobody', 'n', 'h', 't')"
    )


def test_a_failed_commit_rolls_back_and_leaves_the_connection_usable(db, tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    hooks: list[str] = []
    with pytest.raises(Exception, match="FOREIGN KEY"):
        with db.atomic() as tx:
            blob = store.write(b"for a row that never lands")
            tx.after_rollback(lambda: store.delete(blob))
            tx.after_rollback(lambda: hooks.append("rollback"))
            tx.after_commit(lambda: hooks.append("commit"))
            _insert_orphan_api_key(tx)
    assert hooks == ["rollback"]
    assert not db.conn.in_transaction
    assert not store.path_for(blob).exists()
    assert db.query("SELECT * FROM api_keys") == []
    with db.atomic() as tx:  # the thread's connection still works
        tx.execute("INSERT INTO limit_events (bucket, at, expires_at) VALUES ('b', 1, 2)")
    assert db.query_one("SELECT COUNT(*) FROM limit_events")[0] == 1


def test_an_exception_in_the_block_rolls_back_and_runs_only_rollback_hooks(db):
    hooks: list[str] = []
    with pytest.raises(KeyError):
        with db.atomic() as tx:
            tx.after_rollback(lambda: hooks.append("rollback"))
            tx.after_commit(lambda: hooks.append("commit"))
            tx.execute("INSERT INTO limit_events (bucket, at, expires_at) VALUES ('b', 1, 2)")
            raise KeyError("boom")
    assert hooks == ["rollback"]
    assert db.query("SELECT * FROM limit_events") == []


def test_a_commit_runs_only_commit_hooks_and_a_failing_hook_does_not_undo_it(db):
    hooks: list[str] = []
    with db.atomic() as tx:
        tx.after_commit(lambda: 1 / 0)
        tx.after_commit(lambda: hooks.append("commit"))
        tx.after_rollback(lambda: hooks.append("rollback"))
        tx.execute("INSERT INTO limit_events (bucket, at, expires_at) VALUES ('b', 1, 2)")
    assert hooks == ["commit"]
    assert db.query_one("SELECT COUNT(*) FROM limit_events")[0] == 1


def test_nested_write_transactions_are_refused(db):
    with db.atomic():
        with pytest.raises(RuntimeError, match="nested"):
            with db.atomic():
                pass

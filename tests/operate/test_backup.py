"""Backups that restore: backup while writing, restore, verify, and what restore refuses."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from telentir import cli, close_app, create_app
from telentir.maintenance import backup as backups
from telentir.services import accounts, objects, roots
from telentir.wiring import build_runtime

from ..operate_support import ObjectWriter, Stored, run_cli, verified_user
from ..sse_client import must_open
from ..support import FIXED_MASTER_KEY, ServerProcess, config_over

ENV = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_INLINE_MAX_BYTES": "256"}
OTHER_KEY = "22" * 32


class Churn:
    """Writes continuously in a thread: objects to keep (with the time each was acknowledged),
    and objects whose content is replaced and which are then deleted (files vanish)."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer
        self.kept: list[tuple[float, Stored]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.kept.append((time.monotonic(), self.writer.create(1500)))
                victim = self.writer.create(2000)
                self.writer.replace(victim.id, 2500)
                self.writer.delete(victim.id)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def assert_served(server: ServerProcess, api_key: str, stored: list[Stored]) -> None:
    reader = ObjectWriter(server.url, api_key)
    try:
        for item in stored:
            resp = reader.get(f"/api/objects/{item.id}")
            assert resp.status_code == 200, (item.id, resp.text[:200])
            body = resp.json()
            assert (body["content"], body["auth_tag"]) == (item.content, item.auth_tag), item.id
    finally:
        reader.close()


def test_a_backup_taken_while_writing_restores_every_acknowledged_object(tmp_path):
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    server = ServerProcess(data, ENV).start()
    try:
        _, api_key = verified_user(data)
        writer = ObjectWriter(server.url, api_key)
        # Both homes of ciphertext: in the row (up to 256 bytes here) and in files.
        before = [writer.create(size) for size in (40, 200, 3000, 9000) * 5]
        with Churn(ObjectWriter(server.url, api_key)) as churn:
            while len(churn.kept) < 5:
                time.sleep(0.01)
            began = time.monotonic()
            result = run_cli(data, "backup", str(backup), env=ENV)
            written_during = len(churn.kept)
        assert churn.error is None, churn.error
        writer.close()
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert written_during > 5, "the server wrote nothing while the backup ran"
    acknowledged = before + [item for at, item in churn.kept if at < began]

    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["format"] == "telentir-backup" and manifest["format_version"] == 1
    assert manifest["master_key_included"] is False and not (backup / "master.key").exists()
    assert manifest["master_key_fingerprint"].startswith("sha256:")
    assert FIXED_MASTER_KEY not in (backup / "manifest.json").read_text()
    assert manifest["tables"]["objects"] >= len(acknowledged)

    restore = run_cli(restored, "restore", str(backup), env=ENV)
    assert restore.returncode == 0, restore.stderr
    check = run_cli(restored, "verify", env=ENV)
    assert check.returncode == 0, check.stdout + check.stderr
    again = ServerProcess(restored, ENV).start()
    try:
        assert_served(again, api_key, acknowledged)
    finally:
        again.stop()


@contextmanager
def delete_once_copying_starts(victim: Callable[[], None]) -> Iterator[Callable[..., Any]]:
    """A progress that deletes an object's file right after the first snapshot, before it is copied."""
    rounds = []

    @contextmanager
    def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
        if label == "Copying ciphertext files":
            rounds.append(total)
            if len(rounds) == 1:
                victim()
        yield lambda steps: None

    yield progress


def test_a_file_deleted_after_the_snapshot_makes_the_backup_snapshot_again(tmp_path):
    config = config_over(tmp_path / "data", inline_max_bytes=0)
    rt = build_runtime(config)
    try:
        user = accounts.create_user(rt, "ada@example.com", "+15555550100", verified=True)
        key_id = roots.root_document(rt, user["id"])["stores"]["contacts"]["defaultKey"]
        keep = objects.create_object(rt, user["id"], key_id, b"a" * 50, b"b" * 16, None, "{}")
        doomed = objects.create_object(rt, user["id"], key_id, b"c" * 50, b"d" * 16, None, "{}")
        with delete_once_copying_starts(lambda: objects.delete_object(rt, user["id"], doomed["id"], False)) as bar:
            result = backups.backup(config, tmp_path / "backup", progress=bar)
    finally:
        rt.close()
    assert result.rounds == 2
    copy = sqlite3.connect(tmp_path / "backup" / "telentir.db")
    with closing(copy):
        ids = {row[0] for row in copy.execute("SELECT id FROM objects")}
    assert keep["id"] in ids and doomed["id"] not in ids
    assert not backups.check_files(tmp_path / "backup", result.manifest)


# --- verify -----------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data folder with a user, a root and three file-backed objects; no server running."""
    data = tmp_path / "data"
    app = create_app({"data_dir": data, "master_key": FIXED_MASTER_KEY, "inline_max_bytes": 0, "log_level": "WARNING"})
    try:
        rt = app.extensions["telentir"]
        user = accounts.create_user(rt, "ada@example.com", "+15555550100", verified=True)
        key_id = roots.root_document(rt, user["id"])["stores"]["contacts"]["defaultKey"]
        for n in range(3):
            objects.create_object(rt, user["id"], key_id, bytes([n]) * 128, b"t" * 16, None, "{}")
    finally:
        close_app(app)
    return data


def verify(data: Path, master_key: str = FIXED_MASTER_KEY) -> Any:
    env = {"TELENTIR_DATA_DIR": str(data), "TELENTIR_MASTER_KEY": master_key, "TELENTIR_LOG_LEVEL": "WARNING"}
    return CliRunner().invoke(cli.main, ["verify"], env=env, catch_exceptions=False)


def some_blob(data: Path) -> Path:
    with closing(sqlite3.connect(data / "telentir.db")) as conn:
        blob_id = conn.execute("SELECT blob FROM objects WHERE blob IS NOT NULL ORDER BY n DESC LIMIT 1").fetchone()[0]
    return data / "blobs" / blob_id[:2] / blob_id


def test_verify_passes_on_a_whole_folder(folder):
    result = verify(folder)
    assert result.exit_code == 0, result.output
    assert "is whole" in result.output and "FAILED" not in result.output


def test_verify_names_a_deleted_file(folder):
    blob = some_blob(folder)
    blob.unlink()
    result = verify(folder)
    assert result.exit_code == 1, result.output
    assert f"missing file {blob}" in result.output and "FAILED  ciphertext files" in result.output


def test_verify_names_a_truncated_file(folder):
    blob = some_blob(folder)
    blob.write_bytes(blob.read_bytes()[:10])
    result = verify(folder)
    assert result.exit_code == 1, result.output
    assert f"{blob} has 10 bytes, its object records 128 (truncated or damaged)" in result.output


def test_verify_names_a_file_no_object_names(folder):
    stray = folder / "blobs" / "zz" / ("z" * 24)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"left by a crash")
    result = verify(folder)
    assert result.exit_code == 1, result.output
    assert f"{stray}: no object names this file" in result.output


def test_verify_names_a_wrong_master_key(folder):
    result = verify(folder, master_key=OTHER_KEY)
    assert result.exit_code == 1, result.output
    assert "FAILED  master key" in result.output
    assert "does not open with the master key" in result.output
    assert "platform server 'telentir'" in result.output and "server 'default' of usr_" in result.output


def test_verify_checks_a_backup_against_its_manifest(folder, tmp_path):
    backup = tmp_path / "backup"
    backups.backup(config_over(folder), backup)
    assert verify(backup).exit_code == 0
    damaged = some_blob(backup)
    damaged.write_bytes(bytes(len(damaged.read_bytes())))  # same size, other bytes
    result = verify(backup)
    assert result.exit_code == 1, result.output
    assert "its SHA-256 does not match the manifest" in result.output


# --- restore ----------------------------------------------------------------------------------


def restore(data: Path, backup: Path, **env: str) -> Any:
    full = {"TELENTIR_DATA_DIR": str(data), "TELENTIR_LOG_LEVEL": "WARNING", **env}
    return CliRunner().invoke(cli.main, ["restore", str(backup)], env=full, catch_exceptions=False)


@pytest.fixture
def backup(folder: Path, tmp_path: Path) -> Path:
    """A backup of `folder` without the master key."""
    target = tmp_path / "backup"
    backups.backup(config_over(folder), target)
    return target


def test_restore_refuses_a_folder_that_holds_data(backup, folder):
    result = restore(folder, backup, TELENTIR_MASTER_KEY=FIXED_MASTER_KEY)
    assert result.exit_code == 1
    assert "restore fills an empty data folder only" in result.output and str(folder) in result.output


def test_restore_refuses_a_damaged_backup_and_writes_nothing(backup, tmp_path):
    some_blob(backup).write_bytes(b"x")
    target = tmp_path / "target"
    result = restore(target, backup, TELENTIR_MASTER_KEY=FIXED_MASTER_KEY)
    assert result.exit_code == 1
    assert "does not match its manifest" in result.output and "truncated or changed" in result.output
    assert not target.exists()


def test_restore_refuses_a_master_key_that_is_not_the_backups(backup, tmp_path):
    result = restore(tmp_path / "target", backup, TELENTIR_MASTER_KEY=OTHER_KEY)
    assert result.exit_code == 1
    assert "is not the one this backup was made with" in result.output
    assert not (tmp_path / "target").exists()


def test_restore_without_a_key_says_which_key_to_bring(backup, tmp_path):
    result = restore(tmp_path / "target", backup)
    assert result.exit_code == 0, result.output
    assert "The backup holds no master key: put the key with fingerprint sha256:" in result.output
    assert not (tmp_path / "target" / "master.key").exists()


def test_restore_puts_an_included_key_where_the_key_file_setting_says(folder, tmp_path):
    source = config_over(folder)
    result = CliRunner().invoke(
        cli.main,
        ["backup", str(tmp_path / "with-key"), "--include-master-key"],
        env={"TELENTIR_DATA_DIR": str(folder), "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "Warning: the backup will hold the master key" in result.output
    assert (tmp_path / "with-key" / "master.key").stat().st_mode & 0o777 == 0o600
    secrets_dir = tmp_path / "secrets"
    restored = restore(
        tmp_path / "target", tmp_path / "with-key", TELENTIR_MASTER_KEY_FILE=str(secrets_dir / "telentir.key")
    )
    assert restored.exit_code == 0, restored.output
    key_file = secrets_dir / "telentir.key"
    assert key_file.read_text().strip() == FIXED_MASTER_KEY and key_file.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "target" / "master.key").exists()
    env_file = {"TELENTIR_MASTER_KEY_FILE": str(key_file)}
    check = CliRunner().invoke(cli.main, ["verify"], env={"TELENTIR_DATA_DIR": str(tmp_path / "target"), **env_file})
    assert check.exit_code == 0, check.output
    del source


def test_a_backup_refuses_a_folder_that_is_not_empty(folder, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(backups.BackupError, match="is not empty"):
        backups.backup(config_over(folder), target)


def test_an_interrupted_backup_leaves_nothing_behind(folder, tmp_path, monkeypatch):
    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(backups, "_write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        backups.backup(config_over(folder), tmp_path / "b")
    assert not (tmp_path / "b").exists()


# --- event ids after a restore --------------------------------------------------------------------


def newest_event_id(data: Path) -> int:
    with closing(sqlite3.connect(data / "telentir.db")) as conn:
        return int(conn.execute("SELECT MAX(id) FROM events").fetchone()[0])


def test_clients_ahead_of_a_restored_backup_are_told_to_resync(tmp_path):
    """Events written after the backup are lost with the server: a client holding their ids
    must be told to resync, both at once and after the restored server has written again."""
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    server = ServerProcess(data, ENV).start()
    try:
        _, api_key = verified_user(data)
        writer = ObjectWriter(server.url, api_key)
        writer.create(10)
        assert run_cli(data, "backup", str(backup), env=ENV).returncode == 0
        writer.create(10)
        writer.create(10)
        writer.close()
        client_cursor = newest_event_id(data)  # what a client following the stream has seen
    finally:
        server.stop()
    assert run_cli(restored, "restore", str(backup), env=ENV).returncode == 0
    assert newest_event_id(restored) < client_cursor
    again = ServerProcess(restored, ENV).start()
    try:
        with must_open(again.url, "object_created", api_key, headers={"Last-Event-ID": str(client_cursor)}) as stream:
            assert stream.next_event().event == "resync"
        writer = ObjectWriter(again.url, api_key)
        created = writer.create(10)
        writer.close()
        with must_open(again.url, "object_created", api_key, headers={"Last-Event-ID": str(client_cursor)}) as stream:
            first = stream.next_event()
            assert first.event == "resync", first
            since = first.json()["since"]
            nxt = stream.next_event()
            assert int(nxt.id or 0) >= since  # the stream carries what the resync said, from `since` on
            while nxt.json()["id"] != created.id:
                nxt = stream.next_event()
            assert int(nxt.id or 0) > client_cursor  # never an id the lost server had issued
        # `since - 1` resumes without another resync (docs/protocol.md §6), restore or not.
        with must_open(again.url, "object_created", api_key, headers={"Last-Event-ID": str(since - 1)}) as stream:
            resumed = stream.next_event()
            assert resumed.event == "object_created" and int(resumed.id or 0) >= since, resumed
    finally:
        again.stop()


def test_restore_keeps_the_backup_folder_untouched(backup, tmp_path):
    before = {p: p.read_bytes() for p in backup.rglob("*") if p.is_file()}
    assert restore(tmp_path / "target", backup, TELENTIR_MASTER_KEY=FIXED_MASTER_KEY).exit_code == 0
    assert {p: p.read_bytes() for p in backup.rglob("*") if p.is_file()} == before
    shutil.rmtree(tmp_path / "target")

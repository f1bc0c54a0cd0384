"""Upgrades keep data: numbered migrations, `telentir migrate [--dry-run]`, and the schema-v1 fixture read back."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from telentir.cli import main
from telentir.storage import schema
from telentir.storage.db import SqliteDatabase

from ..support import FIXED_MASTER_KEY, ROOT, Api, ServerProcess, server_env

FIXTURE = ROOT / "tests" / "fixtures" / "schema-v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def _shape(path: Path) -> dict[str, object]:
    """Tables with their columns, indexes and foreign keys, as SQLite reports them (not as their DDL is spelled)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        shape: dict[str, object] = {}
        for table in tables:
            columns = [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({table})")]
            indexes = sorted(
                (r[1], r[2], tuple(c[2] for c in conn.execute(f"PRAGMA index_info({r[1]})")))
                for r in conn.execute(f"PRAGMA index_list({table})")
            )
            fks = sorted(tuple(r[2:]) for r in conn.execute(f"PRAGMA foreign_key_list({table})"))
            shape[table] = (columns, indexes, fks)
        return shape
    finally:
        conn.close()


@pytest.fixture
def v1_folder(tmp_path: Path) -> Path:
    """A copy of the schema-v1 fixture's data folder."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "data", data)
    return data


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY})
    return subprocess.run(
        [sys.executable, "-m", "telentir", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_fixture_is_schema_version_1(v1_folder: Path) -> None:
    assert SqliteDatabase(v1_folder / "telentir.db").schema_version() == 1 == EXPECTED["schema_version"]


def test_a_migrated_database_has_the_schema_of_a_new_one(v1_folder: Path, tmp_path: Path) -> None:
    migrated = SqliteDatabase(v1_folder / "telentir.db")
    migrated.open_schema(migrate=True)
    fresh = SqliteDatabase(tmp_path / "fresh.db")
    fresh.open_schema()
    assert migrated.schema_version() == fresh.schema_version() == schema.latest_version()
    assert _shape(v1_folder / "telentir.db") == _shape(tmp_path / "fresh.db")


def test_dry_run_lists_the_pending_steps_and_changes_nothing(v1_folder: Path) -> None:
    before = (v1_folder / "telentir.db").read_bytes()
    done = _cli(v1_folder, "migrate", "--dry-run")
    assert done.returncode == 0, done.stderr
    steps = schema.pending(1)
    if steps:
        assert "would apply" in done.stdout
        for step in steps:
            assert f"{step.version:04d} {step.name}" in done.stdout
    else:
        assert "nothing to do" in done.stdout
    assert (v1_folder / "telentir.db").read_bytes() == before


def test_migrate_applies_every_step_and_says_so(v1_folder: Path) -> None:
    done = _cli(v1_folder, "migrate")
    assert done.returncode == 0, done.stderr
    for step in schema.pending(1):
        assert f"applied {step.version:04d} {step.name}" in done.stdout
    assert f"schema version {schema.latest_version()}" in done.stdout
    assert SqliteDatabase(v1_folder / "telentir.db").schema_version() == schema.latest_version()
    again = _cli(v1_folder, "migrate")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_migrate_without_a_database_says_how_to_make_one(tmp_path: Path) -> None:
    done = _cli(tmp_path / "absent", "migrate")
    assert done.returncode == 1
    assert "telentir init" in done.stderr
    assert not (tmp_path / "absent" / "telentir.db").exists()


# --- the mechanics, with made-up steps --------------------------------------------------------


def _fake_steps(*sqls: str) -> tuple[schema.Migration, ...]:
    base = schema.latest_version()
    return tuple(schema.Migration(base + n, f"step_{n}", f"step {n}", sql) for n, sql in enumerate(sqls, start=1))


@pytest.fixture
def current_db(tmp_path: Path) -> Iterator[Path]:
    """A new database at this server's schema, with one user row."""
    data = tmp_path / "data"
    db = SqliteDatabase(data / "telentir.db")
    db.open_schema()
    with db.atomic() as tx:
        tx.execute(
            "INSERT INTO users (id, email, phone, plan, created_at) VALUES ('usr_x', 'x@example.com', '+1555', "
            "'starter', '2026-01-01T00:00:00.000Z')"
        )
    db.close()
    yield data


def test_each_step_commits_with_its_version_and_a_failing_step_leaves_the_previous_version(
    current_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = schema.latest_version()
    steps = _fake_steps(
        "-- add a column\nALTER TABLE users ADD COLUMN nickname TEXT;\n",
        "-- half a step\nUPDATE users SET nickname = 'kept?';\nINSERT INTO no_such_table VALUES (1);\n",
    )
    monkeypatch.setattr(schema, "migrations", lambda: steps)
    db = SqliteDatabase(current_db / "telentir.db")
    with pytest.raises(sqlite3.OperationalError):
        db.open_schema(migrate=True)
    assert db.schema_version() == base + 1
    # The failed step's first statement was rolled back with it.
    assert db.query_value("SELECT nickname FROM users WHERE id = 'usr_x'") is None
    db.close()


def test_other_commands_refuse_an_older_database_and_name_migrate(
    current_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _fake_steps("-- noop\nSELECT 1;\n")
    monkeypatch.setattr(schema, "migrations", lambda: steps)
    env = {"TELENTIR_DATA_DIR": str(current_db), "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY}
    result = CliRunner().invoke(main, ["users", "list"], env=env)
    assert result.exit_code == 1, result.output
    assert "telentir migrate" in result.output
    result = CliRunner().invoke(main, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "applied" in result.output
    assert CliRunner().invoke(main, ["users", "list"], env=env).exit_code == 0


def test_a_database_newer_than_the_server_is_refused(current_db: Path) -> None:
    conn = sqlite3.connect(current_db / "telentir.db")
    conn.execute(f"PRAGMA user_version = {schema.latest_version() + 1}")
    conn.close()
    with pytest.raises(schema.SchemaError, match="newer than this server"):
        SqliteDatabase(current_db / "telentir.db").open_schema(migrate=True)


# --- the fixture, upgraded and served ---------------------------------------------------------


@pytest.fixture
def upgraded_server(v1_folder: Path) -> Iterator[ServerProcess]:
    """The v1 fixture after `telentir migrate`, served by a real server."""
    done = _cli(v1_folder, "migrate")
    assert done.returncode == 0, done.stderr
    # The fixture's events are dated the day it was made: keep them however long ago that was.
    server = ServerProcess(
        v1_folder, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_EVENT_RETENTION_SECONDS": str(10**9)}
    ).start()
    yield server
    server.stop()


def test_the_upgraded_fixture_reads_back_intact(upgraded_server: ServerProcess) -> None:
    api = Api(upgraded_server.url, EXPECTED["api_key"])
    try:
        root = api.get("/root").json()
        assert {name: store["id"] for name, store in root["stores"].items()} == EXPECTED["store_ids"]
        assert "privateKey" in root["servers"]["default"] and EXPECTED["byok_server"] in root["servers"]
        for object_id, want in EXPECTED["objects"].items():
            got = api.get(f"/objects/{object_id}").json()
            assert got["content"] == want["content"], object_id
            assert (got["related_object_id"], got["metadata"]) == (want["related_id"], want["metadata"])
        assert api.get(f"/objects/{EXPECTED['deleted_object']}").status_code == 404
        assert api.get(f"/keys/{EXPECTED['key_id']}").json()["metadata"] == {"purpose": "fixture"}
        pub = EXPECTED["publication"]
        listed = api.get(f"/objects/publish/{pub['type']}").json()
        assert [(p["related_id"], p["object_id"]) for p in listed] == [(pub["related_id"], pub["object_id"])]
        assert api.get("/credits").json()["amount"] == EXPECTED["balance"]
        assert api.get(f"/connect/jobs/{EXPECTED['job']['id']}").json() == EXPECTED["job"]
    finally:
        api.close()


def test_the_upgraded_fixture_keeps_its_password_and_its_event_log(upgraded_server: ServerProcess) -> None:
    anonymous = Api(upgraded_server.url)
    try:
        login = anonymous.post("/auth/login", json={"email": EXPECTED["email"], "password": EXPECTED["password"]})
        assert login.status_code == 200, login.text
    finally:
        anonymous.close()
    api = Api(upgraded_server.url, EXPECTED["api_key"])
    try:
        with api.get("/events/object_created", params={"since": "0"}, stream=True, timeout=10) as resp:
            assert resp.status_code == 200
            ids, sent = [], {}
            for line in resp.iter_lines(decode_unicode=True):
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    sent[data["id"]] = data["content"]
                if len(ids) == 11 and len(sent) == 11:  # the eight stores and the three objects the fixture made
                    break
        assert len(ids) == 11 and ids == sorted(ids)
        # Events written before version 10 hold an inline ciphertext as hex in their payload: sent as it was.
        assert {object_id: sent[object_id] for object_id in EXPECTED["objects"]} == {
            object_id: want["content"] for object_id, want in EXPECTED["objects"].items()
        }
    finally:
        api.close()


def test_the_upgraded_fixture_counts_each_user_s_stored_bytes(upgraded_server: ServerProcess) -> None:
    """Migration 6 fills `stored_bytes` from the objects already there (the quota's running count)."""
    with sqlite3.connect(upgraded_server.data_dir / "telentir.db") as conn:
        rows = conn.execute(
            "SELECT u.id, u.stored_bytes, (SELECT COALESCE(SUM(size), 0) FROM objects o WHERE o.user_id = u.id) "
            "FROM users u"
        ).fetchall()
    conn.close()
    assert rows and all(stored == summed for _, stored, summed in rows), rows
    assert any(stored > 0 for _, stored, _ in rows)
    api = Api(upgraded_server.url, EXPECTED["api_key"])
    try:
        usage = api.get("/auth").json()["usage"]
    finally:
        api.close()
    assert usage["quotaBytes"] is None and usage["bytes"] in {stored for _, stored, _ in rows}

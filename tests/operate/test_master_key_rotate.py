"""`telentir master-key rotate`: every secret re-sealed, the server serves on with the new key only."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from telentir import crypto
from telentir.config import load_config
from telentir.maintenance import rotate
from telentir.maintenance.sealed import sealed_secrets

from ..operate_support import ObjectWriter, run_cli
from ..support import ServerProcess


def sealed(data: Path) -> list[tuple[bytes, str]]:
    with closing(sqlite3.connect(data / "telentir.db")) as conn:
        return [(s.sealed, s.context) for s in sealed_secrets(conn)]


def opens(key: bytes, data: Path) -> list[bool]:
    results = []
    for blob, context in sealed(data):
        try:
            crypto.unseal(key, blob, context.encode())
            results.append(True)
        except crypto.CryptoError:
            results.append(False)
    return results


def test_after_rotation_the_server_serves_everything_and_the_old_key_opens_nothing(tmp_path):
    data = tmp_path / "data"  # the key lives in data/master.key, as by default
    server = ServerProcess(data).start()
    try:
        assert (
            run_cli(data, "users", "create", "ada@example.com", "--phone", "+15555550100", "--verified").returncode == 0
        )
        made = run_cli(data, "api-keys", "create", "ada@example.com")
        api_key = made.stdout.strip().splitlines()[-1]
        writer = ObjectWriter(server.url, api_key)
        stored = [writer.create(size) for size in (20, 40000)]
        root_before = writer.get("/api/root").json()
        key_id = writer.session.put(server.url + "/api/keys", json={"server": "default"}, timeout=30).json()
        key_before = writer.get(f"/api/keys/{key_id}").json()
        writer.close()
    finally:
        server.stop()
    old_key = crypto.parse_master_key((data / "master.key").read_text())
    assert all(opens(old_key, data)) and len(sealed(data)) == 2  # the platform key and ada's custodial key

    result = run_cli(data, "master-key", "rotate")
    assert result.returncode == 0, result.stderr
    assert "Re-sealed 2 secret(s) under the new master key sha256:" in result.stdout
    backups = list(data.glob("master.key.*.old"))
    assert len(backups) == 1 and crypto.parse_master_key(backups[0].read_text()) == old_key
    new_key = crypto.parse_master_key((data / "master.key").read_text())
    assert new_key != old_key and (data / "master.key").stat().st_mode & 0o777 == 0o600
    assert opens(new_key, data) == [True, True]
    assert opens(old_key, data) == [False, False]

    again = ServerProcess(data).start()
    try:
        reader = ObjectWriter(again.url, api_key)
        assert reader.get("/api/root").json() == root_before  # the custodial private key unseals
        assert reader.get(f"/api/keys/{key_id}").json() == key_before
        for item in stored:
            body = reader.get(f"/api/objects/{item.id}").json()
            assert (body["content"], body["auth_tag"]) == (item.content, item.auth_tag)
        reader.close()
    finally:
        again.stop()
    assert run_cli(data, "verify").returncode == 0
    refused = run_cli(data, "verify", env={"TELENTIR_MASTER_KEY": old_key.hex()})
    assert refused.returncode == 1 and "does not open with the master key" in refused.stdout


def test_rotation_refuses_a_master_key_from_the_environment(tmp_path):
    data = tmp_path / "data"
    env = {"TELENTIR_MASTER_KEY": "11" * 32}
    assert run_cli(data, "init", env=env).returncode == 0
    result = run_cli(data, "master-key", "rotate", env=env)
    assert result.returncode == 1
    assert "TELENTIR_MASTER_KEY, which this command cannot change" in result.stderr


def test_a_secret_that_does_not_open_stops_the_rotation_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    assert run_cli(data, "init").returncode == 0
    before = sealed(data)
    (data / "master.key").write_text("33" * 32 + "\n")  # not the key the data was sealed with
    result = run_cli(data, "master-key", "rotate")
    assert result.returncode == 1 and "does not open with the current master key" in result.stderr
    assert sealed(data) == before
    assert sorted(p.name for p in data.iterdir() if p.name.startswith("master.key")) == ["master.key"]


def test_an_interrupted_rotation_is_finished_by_the_next_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    assert run_cli(data, "init").returncode == 0
    config = load_config({"data_dir": data}, environ={})

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the process stops right after the commit

    monkeypatch.setattr(rotate, "_swap_files", crash)
    with pytest.raises(KeyboardInterrupt):
        rotate.rotate_master_key(config)
    monkeypatch.undo()
    pending = crypto.parse_master_key((data / "master.key.new").read_text())
    assert all(opens(pending, data))
    result = rotate.rotate_master_key(config)
    assert result.finished_earlier_run and result.resealed == 0
    assert crypto.parse_master_key((data / "master.key").read_text()) == pending
    assert not (data / "master.key.new").exists()
    assert run_cli(data, "verify").returncode == 0

"""The sealed TOTP secret survives `telentir master-key rotate`, `backup` and `restore` (embedded storage).

A user turns two-factor sign-in on; the secret is re-sealed under a new master key, backed
up and restored into a new folder; the restored server still asks for the code and
accepts the one computed from the secret handed out before all that.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import requests

from telentir import crypto
from telentir.maintenance.sealed import sealed_secrets

from ..operate_support import run_cli
from ..support import ServerProcess
from .test_two_factor import totp

pytestmark = pytest.mark.embedded_only("master-key rotate, backup and restore of the embedded storage")

EMAIL = "grace@example.com"
PASSWORD = "correct horse battery"


def _post(server: ServerProcess, path: str, token: str | None = None, **body: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(server.url + "/api" + path, json=body, headers=headers, timeout=30)


def _totp_contexts(data: Path, key: bytes) -> list[str]:
    """The contexts of the sealed TOTP secrets that open with `key`."""
    opened = []
    with closing(sqlite3.connect(data / "telentir.db")) as conn:
        for secret in sealed_secrets(conn):
            if secret.context.startswith("totp:"):
                crypto.unseal(key, secret.sealed, secret.context.encode())  # CryptoError if not
                opened.append(secret.context)
    return opened


def test_the_totp_secret_survives_rotation_backup_and_restore(tmp_path: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored" / "data"
    server = ServerProcess(data).start()  # the key lives in data/master.key
    try:
        made = run_cli(data, "users", "create", EMAIL, "--phone", "+15555550100", "--verified", "--password", PASSWORD)
        assert made.returncode == 0, made.stderr
        session = _post(server, "/auth/login", email=EMAIL, password=PASSWORD).json()["token"]
        secret = _post(server, "/auth/2fa/setup", session).json()["secret"]
        assert _post(server, "/auth/2fa/enable", session, code=totp(secret)).status_code == 200
    finally:
        server.stop()

    rotated = run_cli(data, "master-key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_key = crypto.parse_master_key((data / "master.key").read_text())
    assert len(_totp_contexts(data, new_key)) == 1  # re-sealed: opens with the new key
    assert run_cli(data, "verify").returncode == 0

    assert run_cli(data, "backup", str(backup)).returncode == 0
    restore = run_cli(restored, "restore", str(backup))
    assert restore.returncode == 0, restore.stderr
    shutil.copy(data / "master.key", restored / "master.key")
    (restored / "master.key").chmod(0o600)
    again = ServerProcess(restored).start()
    try:
        login = _post(again, "/auth/login", email=EMAIL, password=PASSWORD)
        assert login.json()["status"] == "2fa_required"
        verified = _post(again, "/auth/2fa/verify", login.json()["token"], code=totp(secret, step_offset=1))
        assert verified.status_code == 200, verified.text
    finally:
        again.stop()


def test_the_cli_refuses_an_unknown_user(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli(data, "init").returncode == 0
    for args in (["users", "disable-2fa", "nobody@example.com"], ["users", "set-password", "nobody@example.com"]):
        result = run_cli(data, *args, "--password", PASSWORD) if args[1] == "set-password" else run_cli(data, *args)
        assert result.returncode != 0
        assert "nobody@example.com" in result.stdout + result.stderr

"""The master key file: made for a new data folder, never made up for an existing one.

A database that holds sealed secrets (the platform key, custodial keys) opens only with the
master key it was made with. If the key file is missing, the server and every command
refuse with a message naming the file and the settings, and create nothing: a fresh key
would open none of the secrets and would then sit there looking like the right one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from telentir.storage.db import SqliteDatabase

from ..support import ROOT, ServerProcess, server_env


def _cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m telentir ARGS` over the folder, without TELENTIR_MASTER_KEY (so the key file is used)."""
    return subprocess.run(
        [sys.executable, "-m", "telentir", *args],
        cwd=ROOT,
        env=server_env(data_dir, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (the folder's parent too, where a key file might land) with a hash of its bytes.

    Logs and the data folder's lock file (it names the pid of whoever last took it) are not data.
    """
    files = {}
    for path in sorted(folder.parent.rglob("*")):
        if path.is_file() and not path.name.endswith(".log") and path.name != "telentir.lock":
            files[str(path.relative_to(folder.parent))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="module")
def used_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder a real server has run on with its own key file, and a user in it."""
    data_dir = tmp_path_factory.mktemp("used") / "data"
    server = ServerProcess(data_dir).start()
    server.stop()
    made = _cli(data_dir, "users", "create", "ada@example.com", "--phone", "+15555550123", "--verified")
    assert made.returncode == 0, made.stderr
    assert (data_dir / "master.key").exists()
    return data_dir


@pytest.fixture
def used_folder(used_template: Path, tmp_path: Path) -> Path:
    """A copy of that folder for one test."""
    return Path(shutil.copytree(used_template, tmp_path / "data"))


def test_a_missing_key_file_next_to_existing_data_stops_the_server_and_creates_nothing(used_folder: Path) -> None:
    key = (used_folder / "master.key").read_bytes()
    (used_folder / "master.key").unlink()
    before = _snapshot(used_folder)
    server = ServerProcess(used_folder)
    with pytest.raises(RuntimeError, match="server exited") as refused:
        server.start()
    message = str(refused.value)
    assert f"the master key file {used_folder / 'master.key'} is missing" in message
    assert "TELENTIR_MASTER_KEY_FILE" in message and "TELENTIR_MASTER_KEY " in message
    assert not (used_folder / "master.key").exists()
    assert _snapshot(used_folder) == before
    # Put back, the same key opens everything again.
    (used_folder / "master.key").write_bytes(key)
    os.chmod(used_folder / "master.key", 0o600)
    listed = _cli(used_folder, "users", "list")
    assert listed.returncode == 0 and "ada@example.com" in listed.stdout, listed.stderr


@pytest.mark.parametrize("args", [["init"], ["users", "list"], ["invites", "create"], ["migrate", "--dry-run"]])
def test_every_command_refuses_without_the_key_file_and_creates_nothing(used_folder: Path, args: list[str]) -> None:
    (used_folder / "master.key").unlink()
    before = _snapshot(used_folder)
    done = _cli(used_folder, *args)
    if args[0] == "migrate":  # needs no key: it only reads and upgrades the schema
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1, done.stdout
        assert "master key file" in done.stderr and "is missing" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (used_folder / "master.key").exists()
    assert _snapshot(used_folder) == before


def test_a_missing_custom_key_file_is_named(used_folder: Path, tmp_path: Path) -> None:
    custom = tmp_path / "keys" / "telentir.key"
    (used_folder / "master.key").rename(tmp_path / "elsewhere.key")
    done = _cli(used_folder, "init", TELENTIR_MASTER_KEY_FILE=str(custom))
    assert done.returncode == 1
    assert f"the master key file {custom} is missing" in done.stderr
    assert not custom.exists() and not custom.parent.exists()
    moved = _cli(used_folder, "users", "list", TELENTIR_MASTER_KEY_FILE=str(tmp_path / "elsewhere.key"))
    assert moved.returncode == 0 and "ada@example.com" in moved.stdout, moved.stderr


def test_a_new_folder_gets_a_key_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = _cli(data_dir, "init")
    assert done.returncode == 0, done.stderr
    assert (data_dir / "master.key").exists()


def test_a_database_without_secrets_gets_a_key_file(tmp_path: Path) -> None:
    """A database made but never served (no platform key sealed yet) is still a new folder."""
    data_dir = tmp_path / "data"
    db = SqliteDatabase(data_dir / "telentir.db")
    db.open_schema()
    db.close()
    done = _cli(data_dir, "init")
    assert done.returncode == 0, done.stderr
    assert (data_dir / "master.key").exists()

"""The admin CLI, every command through click's CliRunner over a fresh data folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from telentir import cli, serving
from telentir.errors import Unauthorized
from telentir.ids import is_id
from telentir.runtime import Runtime
from telentir.services import accounts, credentials

from ..support import FIXED_MASTER_KEY, ServerExited, ServerProcess, runtime_over


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "d"


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    return {
        "TELENTIR_DATA_DIR": str(data_dir),
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_BROKER_URL": "memory://",
        "TELENTIR_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def run(env: dict[str, str]):
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli.main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    """A runtime over the same data folder, to check what the CLI did."""
    with closing(runtime_over(data_dir)) as rt:
        yield rt


def _last_line(result: Result) -> str:
    return result.output.strip().splitlines()[-1]


def _create_user(run: Any, email: str = "ada@example.com", *extra: str) -> str:
    result = run("users", "create", email, "--phone", "+15555550123", *extra)
    assert result.exit_code == 0, result.output
    return _last_line(result)


# --- init -----------------------------------------------------------------------------


def test_init_creates_storage_and_is_idempotent(run, data_dir):
    first = run("init")
    assert first.exit_code == 0, first.output
    assert "Initialized" in first.output and str(data_dir) in first.output
    assert (data_dir / "telentir.db").is_file()
    second = run("init")
    assert second.exit_code == 0, second.output
    assert "removed 0 stray blob file(s)" in second.output


def test_init_creates_a_0600_master_key_file_without_the_env_key(env, data_dir):
    env.pop("TELENTIR_MASTER_KEY")
    result = CliRunner().invoke(cli.main, ["init"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    key_file = data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_text()
    assert CliRunner().invoke(cli.main, ["init"], env=env).exit_code == 0
    assert key_file.read_text() == before


def test_init_refuses_a_bad_setting_with_a_clear_message(run, env):
    env["TELENTIR_MAX_BODY_BYTES"] = "lots"
    result = run("init")
    assert result.exit_code != 0
    assert "TELENTIR_MAX_BODY_BYTES" in result.output


# --- users ----------------------------------------------------------------------------


def test_users_create_prints_the_user_id_last(run, runtime):
    user_id = _create_user(run, "ada@example.com", "--first-name", "Ada", "--last-name", "Lovelace")
    assert is_id(user_id, "usr"), user_id
    user = accounts.get_user(runtime, user_id)
    assert (user["email"], user["first_name"], user["last_name"], user["phone_verified"]) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
        0,
    )
    assert user["password_hash"] is None


def test_users_create_with_password_and_verified(run, runtime):
    user_id = _create_user(run, "bob@example.com", "--verified", "--password", "correct horse")
    user = accounts.login(runtime, "bob@example.com", "correct horse", "127.0.0.1")
    assert user["id"] == user_id and user["phone_verified"] == 1


def test_users_create_refuses_a_duplicate_email(run):
    _create_user(run, "ada@example.com")
    result = run("users", "create", "ADA@example.com", "--phone", "+15555550123")
    assert result.exit_code != 0
    assert "already exists" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("phone", ["not-a-phone", "123", "+1" + "2" * 20])
def test_users_create_refuses_a_bad_phone(run, phone):
    result = run("users", "create", "ada@example.com", "--phone", phone)
    assert result.exit_code != 0
    assert "phone must be a phone number" in result.output
    assert "Traceback" not in result.output


def test_users_create_refuses_a_bad_email(run):
    result = run("users", "create", "not-an-email", "--phone", "+15555550123")
    assert result.exit_code != 0
    assert "email must be a valid email address" in result.output


def test_users_create_refuses_a_short_password(run):
    result = run("users", "create", "ada@example.com", "--phone", "+15555550123", "--password", "short")
    assert result.exit_code != 0
    assert "password must be" in result.output


def test_users_create_needs_a_phone(run):
    result = run("users", "create", "ada@example.com")
    assert result.exit_code == 2
    assert "--phone" in result.output


def test_users_list_shows_every_user(run):
    ada = _create_user(run, "ada@example.com", "--verified")
    bob = _create_user(run, "bob@example.com")
    result = run("users", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"{ada}\tada@example.com\tverified\tstarter", f"{bob}\tbob@example.com\tunverified\tstarter"]


def test_users_list_with_no_users_prints_nothing(run):
    result = run("users", "list")
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_users_verify_phone(run, runtime):
    user_id = _create_user(run, "ada@example.com")
    result = run("users", "verify-phone", "Ada@Example.com")
    assert result.exit_code == 0, result.output
    assert "Phone verified for ada@example.com" in result.output
    assert accounts.get_user(runtime, user_id)["phone_verified"] == 1


def test_users_verify_phone_of_an_unknown_user(run):
    run("init")
    result = run("users", "verify-phone", "nobody@example.com")
    assert result.exit_code != 0
    assert "nobody@example.com" in result.output


# --- api keys -------------------------------------------------------------------------


def _create_key(run: Any, email: str = "ada@example.com", name: str = "laptop") -> tuple[str, str]:
    result = run("api-keys", "create", email, "--name", name)
    assert result.exit_code == 0, result.output
    key_id = result.output.split("Created API key ")[1].split()[0]
    return key_id, _last_line(result)


def test_api_keys_create_prints_a_working_key_last(run, runtime):
    user_id = _create_user(run)
    key_id, key = _create_key(run)
    assert is_id(key_id, "ak")
    assert key.startswith(credentials.API_KEY_PREFIX)
    assert credentials.authenticate(runtime, key)["id"] == user_id


def test_api_keys_create_for_an_unknown_user(run):
    run("init")
    result = run("api-keys", "create", "nobody@example.com")
    assert result.exit_code != 0
    assert "nobody@example.com" in result.output


def test_api_keys_list_never_prints_the_key(run):
    _create_user(run)
    key_id, key = _create_key(run, name="laptop")
    result = run("api-keys", "list", "ada@example.com")
    assert result.exit_code == 0, result.output
    assert key not in result.output
    assert key[len(credentials.API_KEY_PREFIX) :] not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{key_id}\tlaptop\t") and line.endswith("never used")


def test_api_keys_revoke_stops_the_key_at_once(run, runtime):
    _create_user(run)
    key_id, key = _create_key(run)
    assert credentials.authenticate(runtime, key)
    result = run("api-keys", "revoke", key_id)
    assert result.exit_code == 0, result.output
    assert f"Revoked {key_id}" in result.output
    with pytest.raises(Unauthorized):
        credentials.authenticate(runtime, key)
    listed = run("api-keys", "list", "ada@example.com")
    assert key_id not in listed.output


@pytest.mark.parametrize("key_id", ["ak_0123456789abcdefghijkl", "not-an-id", "../../etc"])
def test_api_keys_revoke_of_an_unknown_key(run, key_id):
    run("init")
    result = run("api-keys", "revoke", key_id)
    assert result.exit_code != 0
    assert "No such API key" in result.output


def test_api_keys_revoke_twice_fails_the_second_time(run):
    _create_user(run)
    key_id, _ = _create_key(run)
    assert run("api-keys", "revoke", key_id).exit_code == 0
    assert run("api-keys", "revoke", key_id).exit_code != 0


# --- serve ----------------------------------------------------------------------------


def test_serve_runs_one_worker_per_core_unless_told(run, monkeypatch, env):
    """Several workers need no Redis: one per core by default; TELENTIR_WORKERS or --workers say otherwise."""
    counts: list[int] = []
    monkeypatch.setattr(serving, "serve", lambda host, port, workers, *args, **kwargs: counts.append(workers))
    assert run("serve").exit_code == 0
    env["TELENTIR_WORKERS"] = "3"
    assert run("serve").exit_code == 0
    assert run("serve", "--workers", "1").exit_code == 0
    assert counts == [len(os.sched_getaffinity(0)), 3, 1]


def test_serve_refuses_a_bad_setting_before_starting(run, env, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(serving, "serve", lambda *a, **k: calls.append("serve"))
    env["TELENTIR_BROKER_URL"] = "http://nope"
    result = run("serve")
    assert result.exit_code != 0
    assert "TELENTIR_BROKER_URL" in result.output
    assert calls == []


def test_cli_help_lists_every_command():
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("serve", "init", "users", "api-keys"):
        assert name in result.output


# --- demo user ------------------------------------------------------------------------


def test_ensure_demo_user_is_idempotent(runtime, data_dir):
    first = cli.ensure_demo_user(runtime)
    second = cli.ensure_demo_user(runtime)
    assert first == second
    user = credentials.authenticate(runtime, second)
    assert user["email"] == cli.DEMO_EMAIL and user["phone_verified"] == 1
    assert [u["email"] for u in accounts.list_users(runtime)] == [cli.DEMO_EMAIL]
    key_file = data_dir / "demo-api-key"
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(credentials.list_api_keys(runtime, user["id"])) == 1


def test_ensure_demo_user_replaces_a_revoked_key(runtime):
    first = cli.ensure_demo_user(runtime)
    user_id = credentials.authenticate(runtime, first)["id"]
    (record,) = credentials.list_api_keys(runtime, user_id)
    credentials.revoke_api_key(runtime, record["id"])
    second = cli.ensure_demo_user(runtime)
    assert second != first
    assert credentials.authenticate(runtime, second)["id"] == user_id
    assert len(accounts.list_users(runtime)) == 1


# --- the master key must fit the data folder ------------------------------------------


def test_a_different_master_key_is_refused_with_a_clear_message(run, env):
    assert run("init").exit_code == 0
    env["TELENTIR_MASTER_KEY"] = "22" * 32
    for args in (["init"], ["users", "list"]):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert "master key does not open this data folder" in result.output
        assert "Traceback" not in result.output


def test_a_corrupt_master_key_file_is_refused_with_a_clear_message(env, data_dir):
    env.pop("TELENTIR_MASTER_KEY")
    data_dir.mkdir(parents=True)
    (data_dir / "master.key").write_text("garbage\n")
    for args in (["init"], ["users", "list"]):
        result = CliRunner().invoke(cli.main, args, env=env, catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert "master key must be 32 bytes" in result.output


def test_serve_with_a_different_master_key_exits_before_serving(run, data_dir):
    # The gunicorn master checks storage once its port is bound, before any worker serves.
    assert run("init").exit_code == 0
    server = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": "22" * 32})
    with pytest.raises(ServerExited) as failed:
        server.start()
    assert failed.value.returncode == 1 and "master key does not open this data folder" in failed.value.log

"""The account's life against a real gunicorn server (contract §10): DELETE /account, users disable/enable/delete,
a deletion killed midway and finished by the next start, and the per-address limit on password reset requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telentir.errors import Unauthorized
from telentir.runtime import Runtime
from telentir.services import accounts, credentials, keyring, maintenance, objects, roots
from telentir.serving import prepare

from .. import backends
from ..dataplane_support import Vault
from ..operate_support import run_cli
from ..sse_client import SSEStream, must_open, open_stream
from ..support import (
    FIXED_MASTER_KEY,
    ROOT,
    Api,
    ServerProcess,
    assert_error,
    config_over,
    running_server,
    runtime_over,
    server_env,
    wait_for_output,
)
from .test_auth_flow import PASSWORD, fresh_addr, read_code, signup
from .test_two_factor import totp

HEARTBEAT = 1.0
RESETS_PER_ADDRESS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: open sign-up, one proxy hop, ciphertext in files, a short heartbeat."""
    settings = {
        "TELENTIR_SIGNUP": "open",
        "TELENTIR_PROXY_HOPS": "1",
        "TELENTIR_INLINE_MAX_BYTES": "0",
        "TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "TELENTIR_PASSWORD_RESETS_PER_ADDRESS_PER_HOUR": str(RESETS_PER_ADDRESS),
    }
    with running_server(tmp_path_factory, "life", **settings) as srv:
        yield srv


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(server.data_dir, *args, env={"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY})


def _api(server: ServerProcess, credential: str | None, addr: str) -> Api:
    api = Api(server.url, credential)
    api.session.headers["X-Forwarded-For"] = addr
    return api


def _api_key(session: Api) -> str:
    made = session.put("/api-keys", json={"name": "life"})
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _fill(session: Api) -> tuple[Vault, list[dict[str, Any]]]:
    """A key, three objects (one published) and a registered server; the vault and the objects."""
    vault = Vault(session, {})
    key = vault.new_key()
    made = [vault.put(key, f"secret {n}".encode() * 50, related=vault.store()) for n in range(3)]
    published = session.put(f"/objects/publish/card/{vault.store()}", json={"objectId": made[0]["id"]})
    assert published.status_code == 200, published.text
    assert session.post("/servers", json={"name": "laptop", "mode": "generate"}).status_code == 201
    return vault, made


def _blob_names(rt: Runtime, user_id: str) -> list[str]:
    return [
        r["blob"] for r in rt.db.query("SELECT blob FROM objects WHERE user_id = ? AND blob IS NOT NULL", (user_id,))
    ]


# --- DELETE /account --------------------------------------------------------------------------


def test_delete_needs_a_session_and_the_password(server: ServerProcess, account: dict[str, Any]) -> None:
    session: Api = account["session"]
    key = _api_key(session)
    by_key = _api(server, key, account["addr"]).delete("/account", json={"password": PASSWORD})
    assert_error(by_key, 403, "session_required")
    assert_error(session.delete("/account", json={"password": "not the password"}), 400, "invalid_password")
    assert_error(session.delete("/account", json={}), 400)
    assert session.get("/auth").status_code == 200  # nothing happened


def test_delete_with_2fa_needs_a_right_code(server: ServerProcess, account: dict[str, Any]) -> None:
    session: Api = account["session"]
    secret = session.post("/auth/2fa/setup").json()["secret"]
    codes = session.post("/auth/2fa/enable", json={"code": totp(secret)}).json()["recoveryCodes"]
    assert_error(session.delete("/account", json={"password": PASSWORD}), 400, "invalid_code")
    assert_error(session.delete("/account", json={"password": PASSWORD, "code": "000000x"}), 400, "invalid_code")
    assert_error(session.delete("/account", json={"password": PASSWORD, "code": 123456}), 400, "invalid_code")
    assert session.delete("/account", json={"password": PASSWORD, "code": codes[0]}).status_code == 204
    assert_error(session.get("/auth"), 401)


def test_delete_erases_everything_ends_every_credential_and_frees_the_email(
    server: ServerProcess, server_rt: Runtime, account: dict[str, Any]
) -> None:
    session: Api = account["session"]
    user_id = session.get("/auth").json()["auth"]["id"]
    _, made = _fill(session)
    blobs = _blob_names(server_rt, user_id)
    assert len(blobs) >= len(made)
    for blob in blobs:
        assert server_rt.blobs.read(blob)
    key = _api_key(session)
    streams = [must_open(server.url, "object_created", key), must_open(server.url, "object_created", account["token"])]
    try:
        assert session.delete("/account", json={"password": PASSWORD}).status_code == 204
        for stream in streams:
            stream.frames_until_end(timeout=HEARTBEAT * 2 + 10)
    finally:
        for stream in streams:
            stream.close()
    assert_error(session.get("/auth"), 401)
    assert_error(_api(server, key, account["addr"]).get("/root"), 401)
    for blob in blobs:  # the ciphertext is gone from the disk (or the bucket)
        with pytest.raises(FileNotFoundError):
            server_rt.blobs.read(blob)
    for table in ("users", "objects", "keys", "servers", "stores", "publications", "api_keys", "events", "jobs"):
        column = "id" if table == "users" else "user_id"
        assert server_rt.db.query_value(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (user_id,)) == 0, table
    assert_error(
        _api(server, None, account["addr"]).post("/auth/login", json={"email": account["email"], "password": PASSWORD}),
        401,
    )
    # The email may sign up again: a new account, empty.
    again = signup(server.url, email=account["email"])
    assert again["token"]
    fresh = _api(server, again["token"], account["addr"]).get("/auth").json()["auth"]
    assert fresh["id"] != user_id and fresh["email"] == account["email"]


def test_delete_leaves_no_copy_of_inline_ciphertext_in_the_database_files(
    tmp_path_factory: pytest.TempPathFactory, storage_backend: str
) -> None:
    """Ciphertext kept in the database (small objects) and its event payloads are overwritten, WAL included."""
    if storage_backend != backends.EMBEDDED:
        pytest.skip("the SQLite files are the embedded backend's (PostgreSQL: dead rows until VACUUM)")
    with running_server(tmp_path_factory, "erase", TELENTIR_SIGNUP="open") as srv:
        made = signup(srv.url, headers={"X-Forwarded-For": fresh_addr()})
        session = _api(srv, made["token"], fresh_addr())
        assert session.post("/auth/phone/send").status_code == 200
        assert session.post("/auth/phone/verify", json={"code": read_code(srv, made["phone"])}).status_code == 200
        vault = Vault(session, {})
        key = vault.new_key()
        contents = [bytes.fromhex(vault.put(key, f"inline {n}".encode() * 40)["content"]) for n in range(5)]
        files = [path for path in srv.data_dir.rglob("*") if path.is_file()]
        assert any(contents[0] in path.read_bytes() for path in files)  # the check can see it before
        assert session.delete("/account", json={"password": PASSWORD}).status_code == 204
        for path in (path for path in srv.data_dir.rglob("*") if path.is_file()):
            data = path.read_bytes()
            for content in contents:
                assert content not in data and content.hex().encode() not in data, path
        session.close()


# --- the operator's disable, enable and delete --------------------------------------------------


def test_disabled_accounts_get_account_disabled_everywhere_until_enabled(
    server: ServerProcess, account: dict[str, Any]
) -> None:
    session: Api = account["session"]
    key = _api(server, _api_key(session), account["addr"])
    stream = must_open(server.url, "object_created", account["token"])
    try:
        assert _cli(server, "users", "disable", account["email"]).returncode == 0
        stream.frames_until_end(timeout=HEARTBEAT * 2 + 10)  # an open stream ends within a heartbeat
    finally:
        stream.close()
    assert_error(session.get("/auth"), 403, "account_disabled")
    assert_error(session.get("/root"), 403, "account_disabled")
    assert_error(key.get("/root"), 403, "account_disabled")
    assert_error(key.get("/account/export"), 403, "account_disabled")
    login = _api(server, None, account["addr"]).post(
        "/auth/login", json={"email": account["email"], "password": PASSWORD}
    )
    assert_error(login, 403, "account_disabled")
    refused = open_stream(server.url, "object_created", key.session.headers["Authorization"].split()[1])
    assert not isinstance(refused, SSEStream) and refused.status == 403

    done = _cli(server, "users", "enable", account["email"])
    assert done.returncode == 0, done.stderr
    assert session.get("/auth").status_code == 200
    assert key.get("/root").status_code == 200


def test_cli_delete_needs_yes_and_names_the_stripe_customer(
    server: ServerProcess, server_rt: Runtime, account: dict[str, Any]
) -> None:
    session: Api = account["session"]
    user_id = session.get("/auth").json()["auth"]["id"]
    _fill(session)
    blobs = _blob_names(server_rt, user_id)
    assert _cli(server, "users", "set-stripe-customer", account["email"], "cus_Life42").returncode == 0
    refused = _cli(server, "users", "delete", account["email"])
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert session.get("/auth").status_code == 200
    done = _cli(server, "users", "delete", account["email"], "--yes")
    assert done.returncode == 0, done.stderr
    assert "cus_Life42" in done.stdout
    assert_error(session.get("/auth"), 401)
    for blob in blobs:
        with pytest.raises(FileNotFoundError):
            server_rt.blobs.read(blob)
    listed = _cli(server, "users", "list")
    assert account["email"] not in listed.stdout
    shown = _cli(server, "audit", account["email"], "--action", "account_deleted")
    assert shown.returncode == 0 and "account_deleted" in shown.stdout and "cus_Life42" in shown.stdout


# --- password reset requests per address -----------------------------------------------------------


def test_password_reset_requests_are_limited_per_address(server: ServerProcess) -> None:
    api = _api(server, None, fresh_addr())
    for n in range(RESETS_PER_ADDRESS):
        assert api.post("/auth/password/reset", json={"email": f"nobody{n}@example.com"}).status_code == 202
    refused = api.post("/auth/password/reset", json={"email": "nobody@example.com"})
    assert_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    other = _api(server, None, fresh_addr())
    assert other.post("/auth/password/reset", json={"email": "nobody@example.com"}).status_code == 202


# --- kill -9 mid-deletion --------------------------------------------------------------------------

DELETER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from telentir.config import load_config
    from telentir.services import deletion
    from telentir.wiring import build_runtime

    rt = build_runtime(load_config())
    erase = rt.blobs.delete_many

    def erase_then_hang(blob_ids):
        erase(list(blob_ids))
        print("erasing", flush=True)
        time.sleep(3600)  # killed here: files erased, rows still there

    rt.blobs.delete_many = erase_then_hang
    deletion.OBJECT_BATCH = 5
    deletion.delete_account(rt, sys.argv[1])
""")


def test_a_deletion_killed_midway_is_finished_by_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_INLINE_MAX_BYTES": "0"}
    rt = runtime_over(data, inline_max_bytes=0)
    try:
        user_id, email, api_key, blobs = _user_with_objects(rt, 12)
    finally:
        rt.close()
    out = tmp_path / "deleter.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", DELETER, user_id, str(ROOT)],
            cwd=ROOT,
            env=server_env(data, env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_output(proc, out, b"erasing", timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)

    rt = runtime_over(data, inline_max_bytes=0)
    try:
        # Killed midway: some rows remain, yet nothing of the account is visible.
        assert rt.db.query_value("SELECT COUNT(*) FROM objects WHERE user_id = ?", (user_id,)) > 0
        row = rt.db.query_one("SELECT email, deleted_at FROM users WHERE id = ?", (user_id,))
        assert row["deleted_at"] is not None and row["email"] != email
        assert email not in [u["email"] for u in accounts.list_users(rt)]
        with pytest.raises(Unauthorized):
            credentials.authenticate(rt, api_key)
    finally:
        rt.close()

    report = prepare(config_over(data, inline_max_bytes=0))
    assert report["finished_deletions"] in (0, 1)  # a bucket's are finished by the serving pruner instead
    rt = runtime_over(data, inline_max_bytes=0)
    try:
        if not report["finished_deletions"]:
            maintenance.account_upkeep(rt)
        assert rt.db.query_one("SELECT 1 FROM users WHERE id = ?", (user_id,)) is None
        assert rt.db.query_value("SELECT COUNT(*) FROM objects WHERE user_id = ?", (user_id,)) == 0
        for blob in blobs:
            with pytest.raises(FileNotFoundError):
                rt.blobs.read(blob)
        entry = rt.db.query_one("SELECT detail FROM audit WHERE user_id = ? AND action = 'account_deleted'", (user_id,))
        assert entry is not None and email in entry["detail"]
    finally:
        rt.close()


def _user_with_objects(rt: Runtime, count: int) -> tuple[str, str, str, list[str]]:
    """A user with an API key and `count` objects in files, made through the services; id, email, key, blobs."""
    user = accounts.create_user(rt, f"doomed-{os.urandom(4).hex()}@example.com", "+15555550100", verified=True)
    roots.ensure_root(rt, user["id"])
    key = keyring.create_key(rt, user["id"], "default", os.urandom(32), os.urandom(12), "{}")
    for n in range(count):
        objects.create_object(rt, user["id"], key["id"], os.urandom(200 + n), os.urandom(16), None, "{}")
    api_key = credentials.create_api_key(rt, user["id"], "doomed")["key"]
    return user["id"], user["email"], api_key, _blob_names(rt, user["id"])

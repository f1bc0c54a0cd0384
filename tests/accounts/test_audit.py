"""The audit log against a real gunicorn server (contract §10): GET /audit and `telentir audit`, pruning."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telentir.errors import Conflict
from telentir.ids import iso
from telentir.runtime import Runtime
from telentir.services import audit, credentials, maintenance

from ..operate_support import run_cli
from ..support import FIXED_MASTER_KEY, Api, ServerProcess, assert_error, make_user, running_server, runtime_over
from .test_auth_flow import PASSWORD, fresh_addr, signup
from .test_two_factor import totp

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: open sign-up, behind one proxy hop (X-Forwarded-For names the client)."""
    with running_server(tmp_path_factory, "audit", TELENTIR_SIGNUP="open", TELENTIR_PROXY_HOPS="1") as srv:
        yield srv


def _api(server: ServerProcess, credential: str | None, addr: str) -> Api:
    api = Api(server.url, credential)
    api.session.headers["X-Forwarded-For"] = addr
    return api


def _login(server: ServerProcess, account: dict[str, Any], password: str = PASSWORD) -> Any:
    return _api(server, None, account["addr"]).post(
        "/auth/login", json={"email": account["email"], "password": password}
    )


def _actions(api: Api, **query: Any) -> list[str]:
    resp = api.get("/audit", params=query)
    assert resp.status_code == 200, resp.text
    return [item["action"] for item in resp.json()["items"]]


def test_sign_ins_failures_api_keys_and_password_changes_newest_first(
    server: ServerProcess, account: dict[str, Any]
) -> None:
    session: Api = account["session"]
    assert _login(server, account, "not the password").status_code == 401
    assert _login(server, account).status_code == 200
    made = session.put("/api-keys", json={"name": "ci"}).json()
    assert session.delete(f"/api-keys/{made['id']}").status_code == 204
    changed = session.post("/auth/password", json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    assert changed.status_code == 200, changed.text
    fresh = _api(server, changed.json()["token"], account["addr"])

    page = fresh.get("/audit")
    assert page.status_code == 200
    items = page.json()["items"]
    assert [i["action"] for i in items] == [
        "password_changed",
        "api_key_revoked",
        "api_key_created",
        "login",
        "login_failed",
    ]
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    assert page.json()["next"] is None
    by_action = {i["action"]: i for i in items}
    assert by_action["login"]["credential"] == "password" and by_action["login"]["ip"] == account["addr"]
    assert by_action["login_failed"]["ip"] == account["addr"]
    assert by_action["api_key_created"]["credential"] == "session"
    assert by_action["api_key_created"]["detail"] == {"apiKeyId": made["id"], "name": "ci"}
    assert made["key"] not in page.text and PASSWORD not in page.text and NEW_PASSWORD not in page.text
    for item in items:
        assert set(item) == {"id", "at", "action", "ip", "credential", "detail"}
        datetime.fromisoformat(item["at"])

    # Any credential of the user reads it: an API key too.
    key = fresh.put("/api-keys", json={"name": "reader"}).json()["key"]
    assert _actions(_api(server, key, account["addr"]))[0] == "api_key_created"


def test_each_user_sees_only_their_own(server: ServerProcess, account: dict[str, Any]) -> None:
    other = signup(server.url)
    theirs = _api(server, other["token"], fresh_addr())
    theirs.put("/api-keys", json={"name": "theirs"})
    mine = account["session"].get("/audit").json()["items"]
    assert all(i["detail"].get("name") != "theirs" for i in mine)
    assert _actions(theirs) == ["api_key_created"]


def test_pages_with_limit_and_before(server: ServerProcess, account: dict[str, Any]) -> None:
    session: Api = account["session"]
    for n in range(7):
        session.put("/api-keys", json={"name": f"k{n}"})
    seen: list[int] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} if before is None else {"limit": 3, "before": before}
        body = session.get("/audit", params=params).json()
        assert len(body["items"]) <= 3
        seen += [i["id"] for i in body["items"]]
        before = body["next"]
        if before is None:
            break
    assert len(seen) == 7 and seen == sorted(seen, reverse=True)
    assert len(session.get("/audit").json()["items"]) == 7  # default 50
    for bad in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"before": "-1"}, {"before": "1e3"}):
        assert_error(session.get("/audit", params=bad), 400, "invalid_request")


def test_2fa_entries_and_the_limited_token_is_refused(server: ServerProcess, account: dict[str, Any]) -> None:
    session: Api = account["session"]
    secret = session.post("/auth/2fa/setup").json()["secret"]
    assert session.post("/auth/2fa/enable", json={"code": totp(secret)}).status_code == 200
    limited = _login(server, account).json()["token"]
    assert_error(_api(server, limited, account["addr"]).get("/audit"), 403, "2fa_required")
    assert _api(server, limited, account["addr"]).post("/auth/2fa/verify", json={"code": "000000"}).status_code == 400
    assert _actions(session)[:2] == ["2fa_failed", "2fa_enabled"]
    assert_error(Api(server.url).get("/audit"), 401)


def test_logout_is_recorded(server: ServerProcess, account: dict[str, Any]) -> None:
    token = _login(server, account).json()["token"]
    assert _api(server, token, account["addr"]).get("/auth/logout").status_code == 200
    assert _actions(account["session"])[0] == "logout"


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(server.data_dir, *args, env={"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY})


def test_the_operator_view(server: ServerProcess, account: dict[str, Any]) -> None:
    assert _login(server, account, "not the password").status_code == 401
    account["session"].put("/api-keys", json={"name": "seen by the operator"})
    shown = _cli(server, "audit", account["email"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "api_key_created" in lines[0] and "seen by the operator" in lines[0]
    assert "login_failed" in lines[1] and account["addr"] in lines[1]
    only = _cli(server, "audit", account["email"], "--action", "login_failed", "--json")
    rows = [json.loads(line) for line in only.stdout.splitlines()]
    assert [r["action"] for r in rows] == ["login_failed"] and rows[0]["ip"] == account["addr"]
    assert _cli(server, "users", "disable", account["email"]).returncode == 0
    assert "account_disabled" in _cli(server, "audit", account["email"], "--action", "account_disabled").stdout
    missing = _cli(server, "audit", "nobody-at-all@example.com")
    assert missing.returncode != 0


def test_entries_past_retention_are_pruned(tmp_path: Path) -> None:
    rt: Runtime = runtime_over(tmp_path / "data", audit_retention_days=30)
    try:
        with rt.db.atomic() as tx:
            audit.record(tx, "usr_old", "login")
            audit.record(tx, "usr_new", "login")
            old = iso(datetime.now(UTC) - timedelta(days=31))
            tx.execute("UPDATE audit SET at = ? WHERE user_id = 'usr_old'", (old,))
        maintenance.account_upkeep(rt)
        assert [r["user_id"] for r in rt.db.query("SELECT user_id FROM audit")] == ["usr_new"]
    finally:
        rt.close()


def test_an_entry_commits_with_its_change_or_not_at_all(tmp_path: Path) -> None:
    rt: Runtime = runtime_over(tmp_path / "data", max_api_keys_per_user=1)
    try:
        user = make_user(rt)  # holds the one API key it may have
        with pytest.raises(Conflict):
            credentials.create_api_key(rt, user["id"], "one too many")
        actions = [r["action"] for r in rt.db.query("SELECT action FROM audit WHERE user_id = ?", (user["id"],))]
        assert actions == ["api_key_created"]  # the refused key wrote no entry
    finally:
        rt.close()

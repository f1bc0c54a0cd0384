"""The `token` cookie carries session tokens only (docs/protocol.md §1.2), against the real server.

A browser sends the cookie on its own; an API key is a long-lived secret a program sends on
purpose, in the Authorization header. An API key found in the cookie is a 401 that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from telentir.runtime import Runtime

from ..conftest import make_user
from ..sse_client import Refused, open_stream
from ..support import Api, ServerProcess, assert_error

User = Callable[..., tuple[dict[str, Any], Api]]
PASSWORD = "correct horse battery"


def cookie_get(server: ServerProcess, path: str, token: str, **headers: str) -> requests.Response:
    """GET /api + path with `token` as the cookie (and no Authorization unless given)."""
    return requests.get(server.url + "/api" + path, headers={"Cookie": f"token={token}", **headers}, timeout=10)


@pytest.mark.parametrize("path", ["/auth", "/root", "/api-keys", "/server"])
def test_an_api_key_in_the_cookie_is_401(live_server: ServerProcess, new_live_user: User, path: str) -> None:
    user, _ = new_live_user()
    body = assert_error(cookie_get(live_server, path, user["api_key"]), 401, "unauthorized")
    assert "session" in body["message"] and "Authorization" in body["message"]


def test_an_api_key_in_the_cookie_opens_no_stream(live_server: ServerProcess, new_live_user: User) -> None:
    user, _ = new_live_user()
    result = open_stream(live_server.url, "key_created", None, headers={"Cookie": f"token={user['api_key']}"})
    assert isinstance(result, Refused), "the stream opened"
    assert result.status == 401 and result.json()["error"] == "unauthorized"


def test_a_session_token_in_the_cookie_works(live_server: ServerProcess, live_rt: Runtime) -> None:
    user = make_user(live_rt, password=PASSWORD)
    with requests.Session() as browser:
        login = {"email": user["email"], "password": PASSWORD}
        answer = browser.post(live_server.url + "/api/auth/login", json=login, timeout=10)
        assert answer.status_code == 200, answer.text
        assert browser.cookies.get("token") == answer.json()["token"]
        profile = browser.get(live_server.url + "/api/auth", timeout=10)
        assert profile.status_code == 200 and profile.json()["auth"]["id"] == user["id"]


def test_the_header_still_carries_api_keys_whatever_the_cookie(live_server: ServerProcess, new_live_user: User) -> None:
    user, _ = new_live_user()
    resp = cookie_get(live_server, "/auth", user["api_key"], Authorization=f"Bearer {user['api_key']}")
    assert resp.status_code == 200, resp.text


def test_logout_with_an_api_key_cookie_leaves_the_key_working(live_server: ServerProcess, new_live_user: User) -> None:
    user, api = new_live_user()
    # a cookie-only logout needs the CSRF header (a cross-site link must not log anybody out)
    assert_error(cookie_get(live_server, "/auth/logout", user["api_key"]), 403, "csrf_header_missing")
    resp = cookie_get(live_server, "/auth/logout", user["api_key"], **{"X-Requested-With": "test"})
    assert resp.status_code == 200 and resp.json() == {"status": "logout"}
    assert api.get("/auth").status_code == 200


def _ws_handshake(server: ServerProcess, **headers: str) -> int:
    """The status of a WebSocket handshake for /api/ws/events/key_created with these headers."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **headers,
    }
    with requests.get(server.url + "/api/ws/events/key_created", headers=upgrade, stream=True, timeout=10) as resp:
        return resp.status_code


def test_a_cookie_websocket_from_another_origin_is_refused(live_server: ServerProcess, live_rt: Runtime) -> None:
    """A WebSocket handshake cannot carry X-Requested-With; a browser's Origin says whose page opened it."""
    user = make_user(live_rt, password=PASSWORD)
    with requests.Session() as browser:
        browser.post(
            live_server.url + "/api/auth/login", json={"email": user["email"], "password": PASSWORD}, timeout=10
        )
        cookie = f"token={browser.cookies['token']}"
    assert _ws_handshake(live_server, Cookie=cookie, Origin="https://evil.example") == 403
    assert _ws_handshake(live_server, Cookie=cookie, Origin=live_server.url) == 101
    assert _ws_handshake(live_server, Cookie=cookie) == 101  # not a browser: no Origin, nothing to check

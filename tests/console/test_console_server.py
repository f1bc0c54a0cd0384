"""What the server does for the console: its files under a strict CSP, its config, the CSRF rule, item counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from telentir import close_app, create_app
from telentir.api.console import ASSETS
from telentir.runtime import Runtime
from telentir.services import credentials

from ..support import FIXED_MASTER_KEY, Api, ServerProcess, assert_error

pytestmark = pytest.mark.scale_out

CSRF = {"X-Requested-With": "telentir-console"}


# --- the console's files ---------------------------------------------------------------------


def test_the_page_is_served_with_a_strict_policy(client: Any) -> None:
    for path in ("/console", "/console/"):
        resp = client.get(path)
        resp.close()  # a file response: its file is closed with it
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        csp = resp.headers["Content-Security-Policy"]
        for directive in (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ):
            assert directive in csp
        assert "unsafe" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["ETag"]


def test_the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() -> None:
    for path in ASSETS.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://", text), path.name
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
            assert "<style" not in text and " style=" not in text, "inline style"
            assert not re.search(r"\son[a-z]+=", text), "inline event handler"
        if path.suffix == ".js":
            assert (
                ".innerHTML" not in text
                and "insertAdjacentHTML" not in text
                and "eval(" not in text
                and "new Function" not in text
            ), path.name


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [("app.js", "text/javascript"), ("crypto.js", "text/javascript"), ("console.css", "text/css")],
)
def test_assets_have_their_type_and_revalidate(client: Any, name: str, mimetype: str) -> None:
    resp = client.get(f"/console/{name}")
    resp.close()
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == f"{mimetype}; charset=utf-8"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get(f"/console/{name}", headers={"If-None-Match": resp.headers["ETag"]})
    again.close()
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/console/nothing.js",
        "/console/../__init__.py",
        "/console/%2e%2e/__init__.py",
        "/console/..%2f__init__.py",
        "/console/api.py",
        "/console//etc/passwd.js",
    ],
)
def test_anything_else_under_console_is_a_json_404(client: Any, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "not_found"


def test_the_config_says_whether_stripe_top_ups_exist(tmp_path: Any) -> None:
    for stripe, expected in ((None, False), ("sk_test_x", True)):
        app = create_app(
            {"data_dir": tmp_path / str(expected), "master_key": FIXED_MASTER_KEY, "stripe_secret_key": stripe}
        )
        try:
            assert app.test_client().get("/console/config.json").get_json() == {"stripe": expected}
        finally:
            close_app(app)


# --- CSRF: cookie-authenticated writes need the header --------------------------------------------


@pytest.fixture
def cookie_session(live_rt: Runtime, new_live_user: Any) -> Iterator[tuple[requests.Session, Api]]:
    """A browser-like session holding only a verified user's `token` cookie, and that user's API client."""
    user, api = new_live_user()
    session = requests.Session()
    session.cookies.set("token", credentials.issue_token(live_rt, user["id"]), domain="127.0.0.1", path="/")
    yield session, api
    session.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/keys", {"server": "default"}),
        ("PUT", "/api/keys", {"server": "default"}),
        ("PUT", "/api/api-keys", {"name": "sneaky"}),
        ("POST", "/api/servers", {"name": "evil", "mode": "generate"}),
        ("POST", "/api/auth/phone/send", None),
    ],
)
def test_a_cookie_write_without_the_header_is_refused_and_changes_nothing(
    live_server: ServerProcess, cookie_session: tuple[requests.Session, Api], method: str, path: str, body: Any
) -> None:
    session, api = cookie_session
    keys_before = api.get("/api-keys").json()
    servers_before = api.get("/servers").json()
    resp = session.request(method, live_server.url + path, json=body, timeout=30)
    assert_error(resp, 403, "csrf_header_missing")
    assert "X-Requested-With" in resp.json()["message"]
    assert api.get("/api-keys").json() == keys_before
    assert api.get("/servers").json() == servers_before


def test_a_cookie_write_with_the_header_goes_through(
    live_server: ServerProcess, cookie_session: tuple[requests.Session, Api]
) -> None:
    session, api = cookie_session
    resp = session.post(live_server.url + "/api/keys", json={"server": "default"}, headers=CSRF, timeout=30)
    assert resp.status_code == 201, resp.text
    key_id = resp.json()["id"]
    patched = session.patch(live_server.url + f"/api/keys/{key_id}", json={"metadata": {"a": 1}}, timeout=30)
    assert_error(patched, 403, "csrf_header_missing")
    assert api.get(f"/keys/{key_id}").json()["metadata"] == {}
    deleted = session.delete(live_server.url + f"/api/keys/{key_id}", timeout=30)
    assert_error(deleted, 403, "csrf_header_missing")
    assert session.delete(live_server.url + f"/api/keys/{key_id}", headers=CSRF, timeout=30).status_code == 204


def test_cookie_reads_and_bearer_writes_need_no_header(
    live_server: ServerProcess, cookie_session: tuple[requests.Session, Api]
) -> None:
    session, api = cookie_session
    assert session.get(live_server.url + "/api/root", timeout=30).status_code == 200
    assert session.head(live_server.url + "/api/events/object_created", timeout=30).status_code == 200
    assert api.post("/keys", json={"server": "default"}).status_code == 201  # Authorization is not ambient


def test_login_still_works_without_the_header(live_server: ServerProcess) -> None:
    # Login takes no credential; a cross-site form cannot send its JSON body (415 first).
    resp = requests.post(live_server.url + "/api/auth/login", data='{"email": "a@b.c", "password": "x"}', timeout=30)
    assert_error(resp, 415, "unsupported_media_type")


# --- item counts ------------------------------------------------------------------------------------


def test_related_listings_count_on_request(new_live_user: Any) -> None:
    _, api = new_live_user()
    store = api.get("/root").json()["stores"]["tasks"]["id"]
    key = api.post("/keys", json={"server": "default"}).json()["id"]
    for _ in range(3):
        api.post("/objects", json={"keyId": key, "content": "00", "authTag": "11" * 16, "relatedId": store})
    page = api.get(f"/objects/{store}/related", params={"limit": 1, "count": "true"})
    assert page.status_code == 200 and len(page.json()) == 1
    assert page.headers["X-Total-Count"] == "3"
    everything = api.get(f"/objects/{store}/related", params={"count": "1"})
    assert everything.headers["X-Total-Count"] == "3" and len(everything.json()) == 3
    assert "X-Total-Count" not in api.get(f"/objects/{store}/related", params={"limit": 1}).headers
    assert_error(api.get(f"/objects/{store}/related", params={"limit": 1, "count": "yes"}), 400, "invalid_request")


def test_another_users_store_is_not_counted(new_live_user: Any) -> None:
    _, owner = new_live_user()
    _, other = new_live_user()
    store = owner.get("/root").json()["stores"]["tasks"]["id"]
    assert_error(other.get(f"/objects/{store}/related", params={"limit": 1, "count": "true"}), 404)


# --- key records in batches (the console's search opens a whole store) ----------------------------


def test_key_records_are_read_a_hundred_at_a_time_and_only_the_callers(new_live_user: Any) -> None:
    _, api = new_live_user()
    _, other = new_live_user()
    mine = [api.post("/keys", json={"server": "default"}).json() for _ in range(3)]
    theirs = other.post("/keys", json={"server": "default"}).json()
    gone = api.post("/keys", json={"server": "default"}).json()
    assert api.delete(f"/keys/{gone['id']}").status_code == 204
    asked = [mine[2]["id"], theirs["id"], mine[0]["id"], gone["id"], mine[2]["id"], mine[1]["id"]]
    resp = api.get("/keys", params={"ids": ",".join(asked)})
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.json() == [mine[2], mine[0], mine[1]]  # in the order asked, once each; not theirs, not gone
    assert resp.json()[0] == api.get(f"/keys/{mine[2]['id']}").json()  # the very record GET /keys/{id} answers


@pytest.mark.parametrize(
    "ids",
    ["", ",", "key_x", "obj_" + "a" * 22, "key_" + "a" * 22 + ",", ",".join(f"key_{n:022d}" for n in range(101))],
)
def test_a_bad_batch_of_key_ids_is_a_400(new_live_user: Any, ids: str) -> None:
    _, api = new_live_user()
    assert_error(api.get("/keys", params={"ids": ids}), 400, "invalid_request")


def test_get_keys_without_ids_is_still_a_405(new_live_user: Any) -> None:
    _, api = new_live_user()
    resp = api.get("/keys")
    assert_error(resp, 405, "method_not_allowed")
    assert "PUT" in resp.headers["Allow"] and "POST" in resp.headers["Allow"]


def test_a_hundred_key_ids_are_enough(new_live_user: Any) -> None:
    _, api = new_live_user()
    key = api.post("/keys", json={"server": "default"}).json()
    ids = [key["id"], *(f"key_{n:022d}" for n in range(99))]
    assert api.get("/keys", params={"ids": ",".join(ids)}).json() == [key]

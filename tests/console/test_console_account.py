"""The console's Account tab and its two-factor sign-in, in Chromium (Playwright), plus GET /auth/2fa/qr.svg.

TOTP codes are computed here from the secret the page shows (RFC 6238, written out below), as
an authenticator app would. The export, audit and deletion tests need routes another branch
adds: each skips itself while its route answers 404 on the test server, and runs once it exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from telentir.api.twofactor_qr import qr_svg
from telentir.runtime import Runtime
from telentir.services import accounts, credentials

from ..console_support import PASSWORD, sign_in_with_password, wait_until_live
from ..support import Api, ServerProcess, assert_error, running_server

pytestmark = pytest.mark.timeout(180)
NEW_PASSWORD = "a brand new passphrase"


def totp(secret: str, step_offset: int = 0) -> str:
    """The 6-digit RFC 6238 code (SHA-1, 30 s) of a base32 secret, `step_offset` steps from now."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int(time.time() // 30) + step_offset
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def wrong_code(secret: str) -> str:
    """A 6-digit code no step around now has."""
    valid = {totp(secret, d) for d in (-1, 0, 1, 2)}
    return next(code for code in ("000000", "111111", "222222", "333333", "444444") if code not in valid)


def fresh_step() -> None:
    """Sleep into the next 30-second step when the current one is nearly over (so -1/0/+1 codes stay valid)."""
    left = 30 - time.time() % 30
    if left < 4:
        time.sleep(left + 0.2)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server; streams ask clients to come back after 500 ms (a password change ends them)."""
    with running_server(tmp_path_factory, "account", TELENTIR_SSE_RETRY_MS="500") as process:
        yield process


@pytest.fixture
def person(server_rt: Runtime, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A verified user with a password and an API key (`api_key`)."""
    user = accounts.create_user(
        server_rt,
        f"{request.node.name[:40]}-{os.getpid()}@example.com",
        "+15555550100",
        password=PASSWORD,
        verified=True,
    )
    user["api_key"] = credentials.create_api_key(server_rt, user["id"], "test")["key"]
    return user


@pytest.fixture
def api(server: ServerProcess, person: dict[str, Any]) -> Iterator[Api]:
    """The person's API-key client."""
    client = Api(server.url, person["api_key"])
    yield client
    client.close()


def session_token(server: ServerProcess, email: str, password: str = PASSWORD) -> str:
    """A full session token from POST /auth/login (2FA off)."""
    resp = Api(server.url).post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200 and resp.json()["status"] == "ok", resp.text
    return str(resp.json()["token"])


def enable_by_api(server: ServerProcess, email: str) -> tuple[str, list[str]]:
    """Turn 2FA on through the API; returns the secret and the recovery codes."""
    session = Api(server.url, session_token(server, email))
    secret = session.post("/auth/2fa/setup").json()["secret"]
    fresh_step()
    enabled = session.post("/auth/2fa/enable", json={"code": totp(secret)})
    assert enabled.status_code == 200, enabled.text
    return secret, enabled.json()["recoveryCodes"]


def skip_while_missing(server: ServerProcess, method: str, path: str) -> None:
    """Skip the test while `path` is not routed on this server (the other branch is not merged yet)."""
    if requests.request(method, f"{server.url}/api{path}", timeout=30).status_code == 404:
        pytest.skip(f"{method} /api{path} is not on this branch yet (404)")


def open_account_tab(page: Page) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("button", name="Account").click()
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def start_sign_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Email and password typed and sent; the page then asks for the code (or opens, or says why not)."""
    page.goto(base_url + "/console")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def enter_code(page: Page, code: str) -> None:
    page.get_by_label("Authentication code").fill(code)
    page.locator("#twofa-form").get_by_role("button", name="Verify").click()


# --- two-factor sign-in ------------------------------------------------------------------------


def test_two_factor_on_from_the_account_tab_then_sign_in_asks_for_the_code(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    page = open_page().page
    sign_in_with_password(page, server.url, person["email"])
    open_account_tab(page)
    expect(page.get_by_text("Off: signing in asks for your password only.")).to_be_visible()

    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    qr = page.get_by_role("img", name="QR code of the two-factor secret")
    expect(qr).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=qr.element_handle())
    assert (qr.get_attribute("src") or "").startswith("blob:")
    secret = page.locator("#twofa-secret").inner_text()
    assert len(secret) >= 32 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

    fresh_step()
    page.get_by_label("Code from your app").fill(wrong_code(secret))
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("alert").filter(has_text="The code is not valid.")).to_be_visible()
    page.get_by_label("Code from your app").fill(totp(secret))
    page.get_by_role("button", name="Enable").click()
    codes = page.get_by_role("list", name="Recovery codes").get_by_role("listitem")
    expect(codes).to_have_count(10)
    expect(page.get_by_text("Save these recovery codes now")).to_be_visible()
    recovery = codes.all_inner_texts()
    assert len(set(recovery)) == 10
    assert api.get("/auth").json()["auth"]["twoFactorEnabled"] is True

    sign_out(page)
    start_sign_in(page, server.url, person["email"])
    expect(page.get_by_label("Authentication code")).to_be_focused()
    enter_code(page, wrong_code(secret))
    expect(page.locator("#signin-error")).to_have_text("The code is not valid.")
    enter_code(page, totp(secret, 1))  # the enabling step's code is spent: the next step's is good
    wait_until_live(page)
    expect(page.locator("#who")).to_have_text(person["email"])

    sign_out(page)
    start_sign_in(page, server.url, person["email"])
    enter_code(page, recovery[0])  # a recovery code, in the same field
    wait_until_live(page)

    open_account_tab(page)
    page.get_by_label("Code from your app, or a recovery code").fill(recovery[1])
    page.get_by_role("button", name="Turn off").click()
    expect(page.get_by_text("Two-factor sign-in is off.")).to_be_visible()
    assert api.get("/auth").json()["auth"]["twoFactorEnabled"] is False
    sign_out(page)
    sign_in_with_password(page, server.url, person["email"])  # no code asked any more


def test_the_account_tab_tells_an_api_key_what_needs_a_password_sign_in(
    server: ServerProcess, person: dict[str, Any], open_page: Any
) -> None:
    from ..console_support import sign_in_with_api_key

    page = open_page().page
    sign_in_with_api_key(page, server.url, person["api_key"])
    open_account_tab(page)
    expect(page.get_by_text("need a sign-in with your password, not an API key")).to_be_visible()
    expect(page.get_by_role("button", name="Turn on two-factor sign-in")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete account…")).to_have_count(0)


# --- the password ------------------------------------------------------------------------------


def test_a_password_change_keeps_the_page_signed_in_and_the_old_password_stops_working(
    server: ServerProcess, person: dict[str, Any], open_page: Any
) -> None:
    page = open_page().page
    sign_in_with_password(page, server.url, person["email"])
    old_cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "token")
    open_account_tab(page)
    page.get_by_label("Current password", exact=True).fill("not the password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert").filter(has_text="password")).to_be_visible()

    page.get_by_label("Current password", exact=True).fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Password changed.")).to_be_visible()
    new_cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "token")
    assert new_cookie != old_cookie
    assert Api(server.url, old_cookie).get("/auth").status_code == 401
    assert Api(server.url, new_cookie).get("/auth").status_code == 200
    # The streams the server ended come back with the new session; the page goes on.
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.get_by_role("navigation", name="Sections").get_by_role("button", name="Stores").click()
    expect(page.locator("#items")).to_have_attribute("data-state", "ready")

    other = open_page().page
    start_sign_in(other, server.url, person["email"], PASSWORD)
    expect(other.locator("#signin-error")).not_to_be_empty()
    expect(other.locator("#live-status")).to_be_hidden()
    sign_in_with_password(other, server.url, person["email"], NEW_PASSWORD)


# --- the export, the audit log, deletion (routes of another branch) ----------------------------------


def test_the_export_downloads_as_ndjson(
    server: ServerProcess, person: dict[str, Any], open_page: Any, tmp_path: Path
) -> None:
    skip_while_missing(server, "GET", "/account/export")
    page = open_page().page
    sign_in_with_password(page, server.url, person["email"])
    open_account_tab(page)
    with page.expect_download() as started:
        page.get_by_role("button", name="Download the export").click()
    download = started.value
    assert download.suggested_filename == f"{person['email']}-export.ndjson"
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    lines = [json.loads(line) for line in target.read_text().splitlines() if line]
    assert lines and {"account", "server", "key"} <= {line["kind"] for line in lines}
    expect(page.get_by_text("Export downloaded.")).to_be_visible()


def test_the_audit_log_lists_the_newest_first_and_pages_with_more(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    skip_while_missing(server, "GET", "/audit")
    for n in range(26):  # 52 entries besides the sign-in: more than a page
        made = api.put("/api-keys", json={"name": f"audit {n}"})
        assert made.status_code == 201, made.text
        assert api.delete(f"/api-keys/{made.json()['id']}").status_code in (200, 204)
    page = open_page().page
    sign_in_with_password(page, server.url, person["email"])
    open_account_tab(page)
    table = page.get_by_role("table", name="Audit log")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("login")  # the newest: this sign-in
    expect(table).to_contain_text("api_key_revoked")
    page.get_by_role("button", name="More", exact=True).click()
    every = api.get("/audit", params={"limit": 500}).json()["items"]
    assert len(every) > 52
    expect(rows).to_have_count(len(every))  # the second page, below the first, to the end
    expect(rows.last).to_contain_text(every[-1]["action"])
    expect(page.get_by_role("button", name="More", exact=True)).to_be_hidden()


def test_deleting_the_account_needs_the_typed_email_the_password_and_a_code(
    server: ServerProcess, person: dict[str, Any], api: Api, open_page: Any
) -> None:
    skip_while_missing(server, "DELETE", "/account")
    secret, recovery = enable_by_api(server, person["email"])
    page = open_page().page
    start_sign_in(page, server.url, person["email"])
    enter_code(page, totp(secret, 1))
    wait_until_live(page)
    open_account_tab(page)

    page.get_by_role("button", name="Delete account…").click()
    dialog = page.get_by_role("dialog", name="Delete the account")
    expect(dialog).to_be_visible()
    erase = dialog.get_by_role("button", name="Delete my account")
    expect(erase).to_be_disabled()
    dialog.get_by_label("Type the account's address to confirm").fill("someone-else@example.com")
    expect(erase).to_be_disabled()
    dialog.get_by_label("Type the account's address to confirm").fill(person["email"])
    expect(erase).to_be_enabled()
    dialog.get_by_label("Your password").fill("not the password")
    dialog.get_by_label("Code from your app, or a recovery code").fill(recovery[0])
    erase.click()
    expect(dialog.get_by_role("alert")).not_to_be_empty()
    assert api.get("/auth").status_code == 200  # nothing deleted

    dialog.get_by_label("Your password").fill(PASSWORD)
    dialog.get_by_label("Code from your app, or a recovery code").fill(recovery[1])
    erase.click()
    expect(page.locator("#notice")).to_have_text("Your account is deleted.")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert api.get("/auth").status_code == 401
    login = Api(server.url).post("/auth/login", json={"email": person["email"], "password": PASSWORD})
    assert login.status_code in (400, 401), login.text  # no such account any more


# --- GET /auth/2fa/qr.svg -------------------------------------------------------------------------


def test_the_qr_code_route_draws_the_pending_secret_for_a_session_only(
    server: ServerProcess, person: dict[str, Any], api: Api
) -> None:
    assert_error(api.get("/auth/2fa/qr.svg"), 403, "session_required")
    session = Api(server.url, session_token(server, person["email"]))
    assert_error(session.get("/auth/2fa/qr.svg"), 409, "2fa_not_set_up")

    first = session.post("/auth/2fa/setup").json()
    resp = session.get("/auth/2fa/qr.svg")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("image/svg+xml")
    assert resp.headers["Cache-Control"] == "no-store"
    assert b"<svg" in resp.content and b"<path" in resp.content
    assert resp.content == qr_svg(first["otpauthUrl"])  # the otpauth URL of the pending secret
    second = session.post("/auth/2fa/setup").json()
    assert session.get("/auth/2fa/qr.svg").content == qr_svg(second["otpauthUrl"])  # a new setup replaces it

    fresh_step()
    assert session.post("/auth/2fa/enable", json={"code": totp(second["secret"])}).status_code == 200
    assert_error(session.get("/auth/2fa/qr.svg"), 409, "2fa_not_set_up")  # an enabled secret is never shown
    limited = Api(server.url).post("/auth/login", json={"email": person["email"], "password": PASSWORD})
    assert limited.json()["status"] == "2fa_required"
    assert_error(Api(server.url, limited.json()["token"]).get("/auth/2fa/qr.svg"), 403, "2fa_required")
    assert_error(Api(server.url).get("/auth/2fa/qr.svg"), 401)

"""Two-factor sign-in (TOTP) and passwords against a real gunicorn server (docs/protocol.md §8, contract §10).

TOTP codes are computed here from the secret the server hands out, per RFC 6238
(HMAC-SHA-1 over the 30-second step counter, 6 digits), independently of the server's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from ..operate_support import run_cli
from ..sse_client import SSEStream, must_open, open_stream
from ..support import FIXED_MASTER_KEY, Api, ServerProcess, assert_error, running_server, wait_until
from .test_auth_flow import PASSWORD, fresh_addr, signup

HEARTBEAT = 1.0
NEW_PASSWORD = "a brand new passphrase"
_RESET_RE = r"SMS to {phone}: Your Telentir password reset code is (\d{{6}})"


# --- RFC 6238, written out here ------------------------------------------------------------


def totp(secret: str, at: float | None = None, step_offset: int = 0) -> str:
    """The 6-digit code of the secret (base32, unpadded) at time `at`, `step_offset` steps away."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30) + step_offset
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def test_the_totp_helper_matches_rfc_6238_test_vectors() -> None:
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last six digits.
    secret = base64.b32encode(b"12345678901234567890").decode().rstrip("=")
    assert totp(secret, 59) == "287082"
    assert totp(secret, 1111111109) == "081804"
    assert totp(secret, 2000000000) == "279037"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, with a short heartbeat (streams of revoked sessions end within one)."""
    settings = {
        "TELENTIR_SIGNUP": "open",
        "TELENTIR_PROXY_HOPS": "1",
        "TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT),
    }
    with running_server(tmp_path_factory, "twofa", **settings) as srv:
        yield srv


def _api(server: ServerProcess, credential: str | None, addr: str) -> Api:
    api = Api(server.url, credential)
    api.session.headers["X-Forwarded-For"] = addr
    return api


def _api_key(account: dict[str, Any]) -> str:
    made = account["session"].put("/api-keys", json={"name": "2fa test"})
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _login(server: ServerProcess, email: str, addr: str, password: str = PASSWORD) -> requests.Response:
    return _api(server, None, addr).post("/auth/login", json={"email": email, "password": password})


def _enable(account: dict[str, Any]) -> tuple[str, list[str]]:
    """Turn 2FA on for the account; returns the secret and the recovery codes."""
    session: Api = account["session"]
    setup = session.post("/auth/2fa/setup")
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    enabled = session.post("/auth/2fa/enable", json={"code": totp(secret)})
    assert enabled.status_code == 200, enabled.text
    return secret, enabled.json()["recoveryCodes"]


def _limited_token(server: ServerProcess, account: dict[str, Any]) -> str:
    resp = _login(server, account["email"], account["addr"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "2fa_required"
    assert "token" not in resp.cookies  # the limited token never replaces a browser's session
    return str(resp.json()["token"])


def _next_step_code(secret: str) -> str:
    """A code of a step after every one used so far (the next step's: accepted, and not yet used)."""
    return totp(secret, step_offset=1)


def _wait_for_fresh_step() -> None:
    """Sleep into the next 30-second step when the current one is nearly over (codes of -1/0/+1 stay valid)."""
    left = 30 - time.time() % 30
    if left < 3:
        time.sleep(left + 0.2)


# --- setup and enable -------------------------------------------------------------------------


def test_setup_gives_a_base32_secret_and_an_otpauth_url_and_needs_a_session(server, account) -> None:
    session: Api = account["session"]
    resp = session.post("/auth/2fa/setup")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    secret = body["secret"]
    assert re.fullmatch(r"[A-Z2-7]+", secret) and len(secret) * 5 >= 160
    assert body["otpauthUrl"] == f"otpauth://totp/Telentir:{account['email']}?secret={secret}&issuer=Telentir"
    assert session.get("/auth").json()["auth"]["twoFactorEnabled"] is False  # pending until enabled

    # A second setup replaces the pending secret: codes of the first no longer enable.
    second = session.post("/auth/2fa/setup").json()["secret"]
    assert second != secret
    assert_error(session.post("/auth/2fa/enable", json={"code": totp(secret)}), 400, "invalid_code")

    key = _api_key(account)
    assert_error(_api(server, key, account["addr"]).post("/auth/2fa/setup"), 403, "session_required")


def test_enable_checks_the_code_and_gives_ten_single_use_recovery_codes(server, account) -> None:
    session: Api = account["session"]
    assert_error(session.post("/auth/2fa/enable", json={"code": "123456"}), 409, "2fa_not_set_up")
    secret, codes = _enable(account)
    assert len(codes) == 10 and len(set(codes)) == 10 and all(isinstance(c, str) and len(c) >= 8 for c in codes)
    assert session.get("/auth").json()["auth"]["twoFactorEnabled"] is True
    assert_error(session.post("/auth/2fa/setup"), 409, "2fa_already_enabled")
    assert secret not in session.get("/auth").text


def test_a_wrong_code_does_not_enable(server, account) -> None:
    session: Api = account["session"]
    secret = session.post("/auth/2fa/setup").json()["secret"]
    wrong = f"{(int(totp(secret)) + 1) % 1_000_000:06d}"
    assert_error(session.post("/auth/2fa/enable", json={"code": wrong}), 400, "invalid_code")
    assert_error(session.post("/auth/2fa/enable", json={"code": 123456}), 400)
    assert_error(session.post("/auth/2fa/enable", json={}), 400)
    assert session.get("/auth").json()["auth"]["twoFactorEnabled"] is False


# --- sign-in ------------------------------------------------------------------------------------


def test_sign_in_asks_for_the_code_and_the_limited_token_reaches_nothing_else(server, account) -> None:
    secret, _ = _enable(account)
    limited = _limited_token(server, account)
    api = _api(server, limited, account["addr"])
    whoami = api.get("/auth")
    assert whoami.status_code == 200 and whoami.json()["status"] == "2fa_required"
    for method, path in [
        ("GET", "/root"),
        ("GET", "/api-keys"),
        ("PUT", "/api-keys"),
        ("GET", "/keys"),
        ("GET", "/credits"),
        ("GET", "/server"),
        ("POST", "/auth/2fa/setup"),
        ("POST", "/auth/password"),
    ]:
        assert_error(api.request(method, path, json={}), 403, "2fa_required")
    refused = open_stream(server.url, "object_created", limited)
    assert not isinstance(refused, SSEStream) and refused.status == 403
    assert refused.json()["error"] == "2fa_required"

    _wait_for_fresh_step()
    verified = api.post("/auth/2fa/verify", json={"code": _next_step_code(secret)})
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "ok" and verified.cookies.get("token") == verified.json()["token"]
    full = _api(server, verified.json()["token"], account["addr"])
    assert full.get("/root").status_code == 200
    assert full.get("/auth").json()["status"] == "ok"
    # The sign-in token is spent once exchanged.
    assert_error(api.post("/auth/2fa/verify", json={"code": totp(secret)}), 401)


def test_a_code_works_once_and_so_does_a_recovery_code(server, account) -> None:
    # Enable, and the replay of its code below, in one 30-second step: waiting after enabling
    # could cross into the next step, whose code enable did not use (a 200, seen in a run).
    _wait_for_fresh_step()
    secret, recovery = _enable(account)  # enabling used the current step's code
    code = totp(secret)
    # The current step's code was used by enable: refused, as is a code of the step before.
    assert_error(
        _api(server, _limited_token(server, account), account["addr"]).post("/auth/2fa/verify", json={"code": code}),
        400,
        "invalid_code",
    )
    assert_error(
        _api(server, _limited_token(server, account), account["addr"]).post(
            "/auth/2fa/verify", json={"code": totp(secret, step_offset=-1)}
        ),
        400,
        "invalid_code",
    )
    later = _next_step_code(secret)
    first = _api(server, _limited_token(server, account), account["addr"]).post(
        "/auth/2fa/verify", json={"code": later}
    )
    assert first.status_code == 200, first.text
    again = _api(server, _limited_token(server, account), account["addr"]).post(
        "/auth/2fa/verify", json={"code": later}
    )
    assert_error(again, 400, "invalid_code")

    used = _api(server, _limited_token(server, account), account["addr"]).post(
        "/auth/2fa/verify", json={"code": recovery[0]}
    )
    assert used.status_code == 200, used.text
    assert_error(
        _api(server, _limited_token(server, account), account["addr"]).post(
            "/auth/2fa/verify", json={"code": recovery[0]}
        ),
        400,
        "invalid_code",
    )
    other = _api(server, _limited_token(server, account), account["addr"]).post(
        "/auth/2fa/verify", json={"code": recovery[1].lower()}
    )
    assert other.status_code == 200, other.text


def test_the_sixth_wrong_code_is_429(server, account) -> None:
    secret, _ = _enable(account)
    api = _api(server, _limited_token(server, account), account["addr"])
    wrong = f"{(int(totp(secret)) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        assert_error(api.post("/auth/2fa/verify", json={"code": wrong}), 400, "invalid_code")
    sixth = api.post("/auth/2fa/verify", json={"code": wrong})
    assert_error(sixth, 429)
    assert int(sixth.headers["Retry-After"]) > 0
    # Signing in again with the right password does not wipe the count of wrong codes.
    assert_error(_login(server, account["email"], account["addr"]), 429)


def test_api_keys_are_unaffected_and_disable_turns_it_off(server, account) -> None:
    secret, recovery = _enable(account)
    key = _api_key(account)
    assert _api(server, key, account["addr"]).get("/root").status_code == 200
    assert_error(_api(server, key, account["addr"]).post("/auth/2fa/disable", json={"code": recovery[0]}), 403)
    session: Api = account["session"]
    assert_error(session.post("/auth/2fa/disable", json={"code": "000000x"}), 400, "invalid_code")
    resp = session.post("/auth/2fa/disable", json={"code": recovery[0]})
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert session.get("/auth").json()["auth"]["twoFactorEnabled"] is False
    assert_error(session.post("/auth/2fa/disable", json={"code": totp(secret)}), 409, "2fa_not_enabled")
    login = _login(server, account["email"], account["addr"])
    assert login.json()["status"] == "ok"


def test_the_cli_turns_2fa_off(server, account) -> None:
    _enable(account)
    result = run_cli(
        server.data_dir, "users", "disable-2fa", account["email"], env={"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY}
    )
    assert result.returncode == 0, result.stderr
    assert "turned off" in result.stdout
    assert _login(server, account["email"], account["addr"]).json()["status"] == "ok"


# --- passwords ------------------------------------------------------------------------------------


def test_a_password_change_revokes_every_session_and_ends_their_streams(server, account) -> None:
    session: Api = account["session"]
    other = _login(server, account["email"], account["addr"]).json()["token"]
    key = _api_key(account)
    stream = must_open(server.url, "object_created", other)
    try:
        assert_error(
            session.post("/auth/password", json={"currentPassword": "not the password", "newPassword": NEW_PASSWORD}),
            400,
            "invalid_password",
        )
        assert_error(session.post("/auth/password", json={"currentPassword": PASSWORD, "newPassword": "short"}), 400)
        changed_at = time.monotonic()
        resp = session.post("/auth/password", json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "ok" and resp.cookies.get("token") == resp.json()["token"]
        _, ended = stream.frames_until_end(timeout=HEARTBEAT * 2 + 10)
        assert ended - changed_at < HEARTBEAT * 2 + 5
    finally:
        stream.close()
    for token in (account["token"], other):
        assert_error(_api(server, token, account["addr"]).get("/auth"), 401)
    assert _api(server, resp.json()["token"], account["addr"]).get("/root").status_code == 200
    assert _api(server, key, account["addr"]).get("/root").status_code == 200  # API keys stay
    assert_error(_login(server, account["email"], account["addr"]), 401)
    assert _login(server, account["email"], account["addr"], NEW_PASSWORD).status_code == 200


def _reset_codes(server: ServerProcess, phone: str) -> list[str]:
    return re.findall(_RESET_RE.format(phone=re.escape(phone)), server.log())


def test_a_password_reset_by_sms_code(server, account) -> None:
    anon = _api(server, None, account["addr"])
    unknown = anon.post("/auth/password/reset", json={"email": "nobody-here@example.com"})
    assert unknown.status_code == 202
    assert anon.post("/auth/password/reset", json={"email": account["email"]}).status_code == 202
    code = wait_until(lambda: (_reset_codes(server, account["phone"]) or [None])[-1], timeout=10, message="reset code")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    confirm = {"email": account["email"], "newPassword": NEW_PASSWORD}
    assert_error(anon.post("/auth/password/reset/confirm", json={**confirm, "code": wrong}), 400, "invalid_code")
    assert_error(anon.post("/auth/password/reset/confirm", json={**confirm, "code": code, "newPassword": "x"}), 400)
    done = anon.post("/auth/password/reset/confirm", json={**confirm, "code": code})
    assert done.status_code == 200 and done.json() == {"status": "ok"}
    assert_error(anon.post("/auth/password/reset/confirm", json={**confirm, "code": code}), 400, "invalid_code")
    assert_error(account["session"].get("/auth"), 401)  # every session revoked
    assert _login(server, account["email"], account["addr"], NEW_PASSWORD).status_code == 200


def test_no_reset_code_goes_to_an_unverified_phone(server) -> None:
    made = signup(server.url)
    anon = _api(server, None, fresh_addr())
    assert anon.post("/auth/password/reset", json={"email": made["email"]}).status_code == 202
    assert anon.post("/auth/password/reset", json={"email": 42}).status_code == 400
    time.sleep(1)
    assert _reset_codes(server, made["phone"]) == []
    assert f"SMS to {made['phone']}" not in server.log()


def test_reset_codes_are_limited_like_sign_in(server, account) -> None:
    anon = _api(server, None, fresh_addr())
    confirm = {"email": account["email"], "newPassword": NEW_PASSWORD, "code": "000000"}
    for _ in range(5):
        assert_error(anon.post("/auth/password/reset/confirm", json=confirm), 400, "invalid_code")
    assert_error(anon.post("/auth/password/reset/confirm", json=confirm), 429)


def test_the_cli_sets_a_password_and_revokes_sessions(server, account) -> None:
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY}
    result = run_cli(server.data_dir, "users", "set-password", account["email"], "--password", NEW_PASSWORD, env=env)
    assert result.returncode == 0, result.stderr
    assert_error(account["session"].get("/auth"), 401)
    assert _login(server, account["email"], account["addr"], NEW_PASSWORD).status_code == 200
    refused = run_cli(server.data_dir, "users", "set-password", account["email"], "--password", "short", env=env)
    assert refused.returncode != 0


def test_one_code_sent_twice_at_once_signs_in_once(server, account) -> None:
    secret, _ = _enable(account)
    _wait_for_fresh_step()
    code = _next_step_code(secret)
    apis = [_api(server, _limited_token(server, account), account["addr"]) for _ in range(4)]
    with ThreadPoolExecutor(len(apis)) as pool:
        answers = list(pool.map(lambda api: api.post("/auth/2fa/verify", json={"code": code}), apis))
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400], [a.text for a in answers]


def test_wrong_enable_codes_are_limited_like_sign_in(server, account) -> None:
    session: Api = account["session"]
    secret = session.post("/auth/2fa/setup").json()["secret"]
    wrong = f"{(int(totp(secret)) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        assert_error(session.post("/auth/2fa/enable", json={"code": wrong}), 400, "invalid_code")
    assert_error(session.post("/auth/2fa/enable", json={"code": wrong}), 429)


def test_a_limited_token_opens_no_websocket(server, account) -> None:
    _enable(account)
    limited = _limited_token(server, account)
    url = server.url + "/api/ws/events/object_created"
    resp = requests.get(
        url,
        headers={
            "Authorization": f"Bearer {limited}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        },
        timeout=30,
    )
    assert_error(resp, 403, "2fa_required")


def test_a_reset_confirm_for_an_unknown_email_is_invalid_code(server) -> None:
    anon = _api(server, None, fresh_addr())
    body = {"email": "nobody-at-all@example.com", "code": "123456", "newPassword": NEW_PASSWORD}
    assert_error(anon.post("/auth/password/reset/confirm", json=body), 400, "invalid_code")

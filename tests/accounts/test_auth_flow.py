"""Accounts and credentials against a real gunicorn server over real sockets (docs/protocol.md §8)."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from telentir.runtime import Runtime

from ..support import Api, ServerProcess, assert_error, config_over, running_server, runtime_over, wait_until

PASSWORD = "correct horse battery"
_CODE_RE = r"SMS to {phone}: Your Telentir verification code is (\d{{6}})"


# --- helpers --------------------------------------------------------------------------


def unique_email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


def unique_phone() -> str:
    return "+1555" + "".join(secrets.choice("0123456789") for _ in range(7))


def fresh_addr() -> str:
    """A random client address, given as X-Forwarded-For to a server trusting one proxy hop."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(256)}"


def signup(
    server_url: str, email: str | None = None, phone: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Register through the API (from an address of its own: sign-ups per address are limited); returns
    email, phone, token and the registration response body."""
    email, phone = email or unique_email(), phone or unique_phone()
    headers = {"X-Forwarded-For": fresh_addr()} if headers is None else headers
    body = {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": email,
        "phone": phone,
        "password": PASSWORD,
        "confirmPassword": PASSWORD,
    }
    with requests.post(server_url + "/api/auth/register", json=body, headers=headers, timeout=30) as resp:
        assert resp.status_code == 201, resp.text
        return {
            "email": email,
            "phone": phone,
            "token": resp.json()["token"],
            "body": resp.json(),
            "cookies": resp.cookies.get_dict(),
        }


def read_codes(server: ServerProcess, phone: str, count: int = 1, timeout: float = 5.0) -> list[str]:
    """The codes the log SMS sender wrote for `phone`, once there are at least `count` of them."""
    pattern = re.compile(_CODE_RE.format(phone=re.escape(phone)))
    return wait_until(
        lambda: codes if len(codes := pattern.findall(server.log())) >= count else None,
        timeout=timeout,
        message=f"{count} SMS code(s) for {phone} in the server log",
    )


def read_code(server: ServerProcess, phone: str) -> str:
    """The last code the log SMS sender wrote for `phone`."""
    return read_codes(server, phone)[-1]


def login(api: Api, email: str, password: str = PASSWORD, **extra: Any) -> requests.Response:
    return api.post("/auth/login", json={"email": email, "password": password, **extra})


@pytest.fixture
def anon(live_server: ServerProcess) -> Iterator[Api]:
    """A client without credentials."""
    api = Api(live_server.url)
    yield api
    api.close()


@pytest.fixture
def apis(live_server: ServerProcess) -> Iterator[Any]:
    """Factory of Api clients (closed afterwards)."""
    made: list[Api] = []

    def make(credential: str | None = None, url: str | None = None) -> Api:
        api = Api(url or live_server.url, credential)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def verified(live_server: ServerProcess, apis: Any) -> dict[str, Any]:
    """A user registered and phone-verified through the API, with a logged-in session."""
    account = signup(live_server.url)
    session = apis(account["token"])
    assert session.post("/auth/phone/send").json() == {"status": "sent"}
    code = read_code(live_server, account["phone"])
    resp = session.post("/auth/phone/verify", json={"code": code})
    assert resp.status_code == 200, resp.text
    return {**account, "session": session}


# --- the whole journey ----------------------------------------------------------------


def test_register_verify_login_key_and_guarded_route(live_server, apis):
    account = signup(live_server.url)
    assert account["body"]["status"] == "phone_not_verified"
    assert account["cookies"].get("token") == account["token"]
    session = apis(account["token"])
    assert_error(session.get("/server"), 403, "phone_not_verified")

    assert session.post("/auth/phone/send").json() == {"status": "sent"}
    code = read_code(live_server, account["phone"])
    verify = session.post("/auth/phone/verify", json={"code": code})
    assert verify.status_code == 200 and verify.json() == {"status": "ok"}

    fresh = apis()
    resp = login(fresh, account["email"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ok"
    token = resp.json()["token"]

    created = apis(token).put("/api-keys", json={"name": "laptop"})
    assert created.status_code == 201, created.text
    record = created.json()
    assert set(record) == {"id", "name", "key", "last_used_at", "created_at"}
    assert record["name"] == "laptop" and record["last_used_at"] is None
    assert re.fullmatch(r"ak_[A-Za-z0-9]{22}", record["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["created_at"])

    server = apis(record["key"]).get("/server")
    assert server.status_code == 200, server.text
    assert server.json()["current"] == "telentir"


def test_send_after_verify_conflicts(verified):
    assert_error(verified["session"].post("/auth/phone/send"), 409, "already_verified")


def test_phone_routes_need_a_credential(anon):
    assert_error(anon.post("/auth/phone/send"), 401)
    assert_error(anon.post("/auth/phone/verify", json={"code": "123456"}), 401)


# --- GET /auth ------------------------------------------------------------------------


def test_get_auth_shape_before_and_after_verification(live_server, apis):
    account = signup(live_server.url)
    session = apis(account["token"])
    resp = session.get("/auth")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body == {
        "status": "phone_not_verified",
        "auth": {
            "id": body["auth"]["id"],
            "email": account["email"],
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phoneVerified": False,
            "twoFactorEnabled": False,
        },
        "usage": {"bytes": 0, "quotaBytes": None},  # no root yet, and no TELENTIR_QUOTA_BYTES_PER_USER
    }
    assert re.fullmatch(r"usr_[A-Za-z0-9]{22}", body["auth"]["id"])
    session.post("/auth/phone/send")
    session.post("/auth/phone/verify", json={"code": read_code(live_server, account["phone"])})
    after = session.get("/auth").json()
    assert after["status"] == "ok" and after["auth"]["phoneVerified"] is True


def test_login_status_for_an_unverified_user(live_server, anon):
    account = signup(live_server.url)
    resp = login(anon, account["email"].upper())
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "phone_not_verified"


# --- tokens and cookies ---------------------------------------------------------------


def test_cookie_token_is_accepted(verified, live_server):
    with requests.Session() as browser:
        resp = browser.post(
            live_server.url + "/api/auth/login", json={"email": verified["email"], "password": PASSWORD}, timeout=30
        )
        assert resp.status_code == 200
        cookie = resp.headers["Set-Cookie"]
        assert "token=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        whoami = browser.get(live_server.url + "/api/auth", timeout=30)
        assert whoami.status_code == 200, whoami.text
        assert whoami.json()["auth"]["email"] == verified["email"]
        assert browser.get(live_server.url + "/api/server", timeout=30).status_code == 200


def test_logout_revokes_the_jwt_and_clears_the_cookie(verified, apis):
    token = login(apis(), verified["email"]).json()["token"]
    session = apis(token)
    assert session.get("/auth").status_code == 200
    resp = session.get("/auth/logout")
    assert resp.status_code == 200 and resp.json() == {"status": "logout"}
    cleared = resp.headers["Set-Cookie"]
    assert cleared.startswith(("token=;", 'token="";')), cleared
    assert "Max-Age=0" in cleared or "1970" in cleared
    assert_error(session.get("/auth"), 401)
    assert_error(apis(token).get("/server"), 401)
    # the other session of the same user is untouched
    assert verified["session"].get("/auth").status_code == 200


def test_logout_by_cookie_revokes_that_token(verified, live_server, apis):
    token = login(apis(), verified["email"]).json()["token"]
    with requests.Session() as browser:
        browser.cookies.set("token", token)
        logout = browser.get(live_server.url + "/api/auth/logout", headers={"X-Requested-With": "test"}, timeout=30)
        assert logout.status_code == 200
    assert_error(apis(token).get("/auth"), 401)


def test_logout_revokes_both_the_header_token_and_the_cookie_token(verified, live_server, apis):
    header_token = login(apis(), verified["email"]).json()["token"]
    cookie_token = login(apis(), verified["email"]).json()["token"]
    with requests.Session() as client:
        client.cookies.set("token", cookie_token)
        resp = client.get(
            live_server.url + "/api/auth/logout", timeout=30, headers={"Authorization": f"Bearer {header_token}"}
        )
        assert resp.status_code == 200
    assert_error(apis(header_token).get("/auth"), 401)
    assert_error(apis(cookie_token).get("/auth"), 401)


def test_logout_without_credential_still_answers(anon):
    resp = anon.get("/auth/logout")
    assert resp.status_code == 200 and resp.json() == {"status": "logout"}


def test_logout_with_an_api_key_does_not_revoke_the_key(new_live_user):
    _user, api = new_live_user()
    assert api.get("/auth/logout").status_code == 200
    assert api.get("/auth").status_code == 200


def test_jwt_verifies_with_the_jwk_from_get_server(verified, apis):
    token = login(apis(), verified["email"]).json()["token"]
    document = verified["session"].get("/server").json()
    name = document["current"]
    jwk = document["keys"][name]["application/jwk+json"]
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, key, algorithms=["RS256"])
    assert claims["sub"] == verified["session"].get("/auth").json()["auth"]["id"]
    assert claims["exp"] > time.time() and claims["iss"] == name
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_remember_gives_a_longer_token(verified, apis):
    short = jwt.decode(login(apis(), verified["email"]).json()["token"], options={"verify_signature": False})
    long = jwt.decode(
        login(apis(), verified["email"], remember=True).json()["token"], options={"verify_signature": False}
    )
    assert long["exp"] - long["iat"] > short["exp"] - short["iat"]


def _forge(live_rt: Runtime, claims: dict[str, Any], key: Any = None, algorithm: str = "RS256") -> str:
    return jwt.encode(
        claims, key or live_rt.platform.private_key, algorithm=algorithm, headers={"kid": live_rt.platform.name}
    )


def test_expired_jwt_is_401_token_expired(verified, live_rt, apis):
    user_id = verified["session"].get("/auth").json()["auth"]["id"]
    now = int(time.time())
    token = _forge(
        live_rt, {"sub": user_id, "iat": now - 120, "exp": now - 60, "jti": "expired-1", "iss": live_rt.platform.name}
    )
    assert_error(apis(token).get("/auth"), 401, "token_expired")


def test_token_from_issue_token_with_a_short_ttl_expires(verified, live_rt, apis):
    from dataclasses import replace

    from telentir.services.credentials import issue_token

    user_id = verified["session"].get("/auth").json()["auth"]["id"]
    short_rt = replace(live_rt, config=replace(live_rt.config, jwt_ttl_seconds=1))  # shares live_rt's storage
    token = issue_token(short_rt, user_id)
    client = apis(token)
    assert client.get("/auth").status_code == 200
    wait_until(lambda: client.get("/auth").status_code == 401, timeout=2.1, interval=0.1, message="the token to expire")
    assert_error(client.get("/auth"), 401, "token_expired")


def test_forged_tokens_are_refused(verified, live_rt, apis):
    from cryptography.hazmat.primitives.asymmetric import rsa

    user_id = verified["session"].get("/auth").json()["auth"]["id"]
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + 600, "jti": secrets.token_hex(8), "iss": live_rt.platform.name}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header, payload, _ = _forge(live_rt, claims).split(".")
    forged = [
        _forge(live_rt, claims, key=other_key),  # someone else's key
        _forge(live_rt, {**claims, "iss": "elsewhere"}),  # wrong issuer
        _forge(live_rt, {k: v for k, v in claims.items() if k != "exp"}),  # never expires
        _forge(live_rt, {k: v for k, v in claims.items() if k != "jti"}),  # cannot be revoked
        jwt.encode(claims, "secret-for-hmac-256-at-least-32-bytes!", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        f"{header}.{payload}.",  # signature stripped
    ]
    for token in forged:
        assert_error(apis(token).get("/auth"), 401)
    assert apis(_forge(live_rt, claims)).get("/auth").status_code == 200  # the control


def test_jwt_for_a_deleted_user_is_401(live_rt, apis):
    now = int(time.time())
    token = _forge(
        live_rt, {"sub": "usr_" + "A" * 22, "iat": now, "exp": now + 60, "jti": "ghost", "iss": live_rt.platform.name}
    )
    assert_error(apis(token).get("/auth"), 401)


# --- API keys -------------------------------------------------------------------------


def test_api_keys_list_has_no_secret_and_delete_revokes_at_once(verified, apis):
    session = verified["session"]
    first = session.put("/api-keys", json={"name": "one"}).json()
    second = session.put("/api-keys", json={"name": "two"}).json()
    listed = session.get("/api-keys")
    assert listed.status_code == 200
    records = listed.json()
    assert [r["name"] for r in records] == ["one", "two"]
    for record in records:
        assert set(record) == {"id", "name", "last_used_at", "created_at"}
    assert first["key"] not in listed.text and second["key"] not in listed.text

    with_key = apis(first["key"])
    assert with_key.get("/server").status_code == 200
    assert session.get("/api-keys").json()[0]["last_used_at"] is not None
    resp = session.delete(f"/api-keys/{first['id']}")
    assert resp.status_code == 204 and resp.content == b""
    assert_error(with_key.get("/server"), 401)
    assert [r["id"] for r in session.get("/api-keys").json()] == [second["id"]]
    assert apis(second["key"]).get("/server").status_code == 200


def test_api_key_default_name_and_bad_names(verified):
    session = verified["session"]
    created = session.put("/api-keys")
    assert created.status_code == 201 and created.json()["name"]
    assert_error(session.put("/api-keys", json={"name": ""}), 400)
    assert_error(session.put("/api-keys", json={"name": "x" * 101}), 400)
    assert_error(session.put("/api-keys", json={"name": 5}), 400)


def test_api_keys_of_another_user_cannot_be_deleted(verified, new_live_user):
    mine = verified["session"].put("/api-keys", json={"name": "mine"}).json()
    _, other = new_live_user()
    assert_error(other.delete(f"/api-keys/{mine['id']}"), 404)
    assert_error(other.delete("/api-keys/not-an-id"), 404)
    assert verified["session"].delete(f"/api-keys/{mine['id']}").status_code == 204
    assert_error(verified["session"].delete(f"/api-keys/{mine['id']}"), 404)


def test_api_key_routes_need_a_credential(anon):
    assert_error(anon.get("/api-keys"), 401)
    assert_error(anon.put("/api-keys", json={"name": "x"}), 401)


# --- 401 and 403 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,  # missing
        "Bearer tlk_" + "x" * 43,  # unknown API key
        "Bearer not.a.jwt",  # unknown token
        "Basic dXNlcjpwYXNzd29yZA==",  # malformed: wrong scheme
        "Bearer",  # malformed: no credential
        "Bearer ",  # malformed: empty credential
        "tlk_" + "x" * 43,  # malformed: no scheme
    ],
)
def test_401_for_missing_unknown_and_malformed_credentials(anon, header):
    headers = {} if header is None else {"Authorization": header}
    for path in ("/server", "/auth", "/api-keys"):
        assert_error(anon.get(path, headers=headers), 401)


def test_401_for_a_revoked_api_key(new_live_user, live_rt):
    from telentir.services import credentials

    user, api = new_live_user()
    (record,) = credentials.list_api_keys(live_rt, user["id"])
    credentials.revoke_api_key(live_rt, record["id"])
    assert_error(api.get("/server"), 401)


def test_403_phone_not_verified_on_the_data_plane(new_live_user):
    _, api = new_live_user(verified=False)
    body = assert_error(api.get("/server"), 403, "phone_not_verified")
    assert "phone" in body["message"].lower()
    assert api.get("/auth").status_code == 200  # the account routes stay open


# --- rate limits (a dedicated server, so the shared one is not poisoned) --------------

MAX_ATTEMPTS = 3  # failures per account and address
ADDRESS_MAX_ATTEMPTS = 6  # failures per address, whatever the accounts
ACCOUNT_MAX_ATTEMPTS = 8  # failures per account, whatever the addresses, before each attempt waits
MAX_DELAY = 4  # seconds, the longest wait past ACCOUNT_MAX_ATTEMPTS
TEXTS_PER_PHONE = 3


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small failure limits, trusting one proxy hop (so tests can vary the address); open sign-up."""
    settings = {
        "TELENTIR_AUTH_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "TELENTIR_AUTH_ADDRESS_MAX_ATTEMPTS": str(ADDRESS_MAX_ATTEMPTS),
        "TELENTIR_AUTH_ACCOUNT_MAX_ATTEMPTS": str(ACCOUNT_MAX_ATTEMPTS),
        "TELENTIR_AUTH_MAX_DELAY_SECONDS": str(MAX_DELAY),
        "TELENTIR_SMS_PER_PHONE_PER_HOUR": str(TEXTS_PER_PHONE),
        "TELENTIR_PROXY_HOPS": "1",
        "TELENTIR_SIGNUP": "open",
    }
    with running_server(tmp_path_factory, "ratelimit", **settings) as server:
        yield server


_addr = fresh_addr


def _login_from(api: Api, addr: str, email: str, password: str) -> requests.Response:
    return api.post("/auth/login", json={"email": email, "password": password}, headers={"X-Forwarded-For": addr})


def _assert_429(resp: requests.Response, window: int = 900) -> None:
    assert_error(resp, 429, "rate_limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= window + 1


def test_wrong_password_and_unknown_email_give_the_identical_401(limited, apis):
    account = signup(limited.url)
    api = apis(url=limited.url)
    wrong_password = _login_from(api, _addr(), account["email"], "not the password")
    unknown_email = _login_from(api, _addr(), unique_email(), "not the password")
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()
    assert wrong_password.json()["status"] == "error"
    assert wrong_password.json()["error"] == "invalid_credentials"


def test_wrong_passwords_lock_the_account_for_that_address_only(limited, apis):
    account = signup(limited.url)
    api, attacker = apis(url=limited.url), _addr()
    for _ in range(MAX_ATTEMPTS):
        assert_error(_login_from(api, attacker, account["email"], "wrong password"), 401)
    # even the right password waits now, from that address, however the email is spelt
    _assert_429(_login_from(api, attacker, account["email"], PASSWORD))
    _assert_429(_login_from(api, attacker, account["email"].upper(), PASSWORD))
    # the owner, from another address, is not locked out
    assert _login_from(api, _addr(), account["email"], PASSWORD).status_code == 200
    # and the attacker's address may still try other accounts
    other = signup(limited.url)
    assert _login_from(api, attacker, other["email"], PASSWORD).status_code == 200


def test_repeated_wrong_passwords_per_address_are_429(limited, apis):
    api = apis(url=limited.url)
    addr = _addr()
    for _ in range(ADDRESS_MAX_ATTEMPTS):  # one password tried on many accounts
        assert_error(_login_from(api, addr, unique_email(), "wrong password"), 401)
    account = signup(limited.url)
    _assert_429(_login_from(api, addr, account["email"], PASSWORD))
    # the same account from another address is fine
    assert _login_from(api, _addr(), account["email"], PASSWORD).status_code == 200


def test_guessing_spread_over_addresses_is_slowed_not_locked(limited, apis):
    account = signup(limited.url)
    api = apis(url=limited.url)
    for _ in range(ACCOUNT_MAX_ATTEMPTS):
        assert_error(_login_from(api, _addr(), account["email"], "wrong password"), 401)
    # Past the ceiling every attempt, from any address, waits a delay doubling per failure (1, 2,
    # 4 s, capped at MAX_DELAY): guess on when allowed until the delay is long enough that no load
    # on the box can make the next request miss it.
    waits = []
    for _ in range(12):
        resp = _login_from(api, _addr(), account["email"], "wrong password")
        if resp.status_code == 429:
            waits.append(int(resp.headers["Retry-After"]))
            if waits[-1] >= MAX_DELAY - 1:
                break
            time.sleep(waits[-1])
        else:
            assert_error(resp, 401)
    assert waits and waits[-1] >= MAX_DELAY - 1 and max(waits) <= MAX_DELAY, waits
    # the owner too waits that delay (not a lockout), then signs in
    owner = _login_from(api, _addr(), account["email"], PASSWORD)
    _assert_429(owner, window=MAX_DELAY)
    time.sleep(int(owner.headers["Retry-After"]))
    assert _login_from(api, _addr(), account["email"], PASSWORD).status_code == 200


def test_a_successful_login_resets_the_count_of_its_address(limited, apis):
    account = signup(limited.url)
    api, addr = apis(url=limited.url), _addr()
    for _ in range(MAX_ATTEMPTS - 1):
        assert_error(_login_from(api, addr, account["email"], "wrong password"), 401)
    assert _login_from(api, addr, account["email"], PASSWORD).status_code == 200
    for _ in range(MAX_ATTEMPTS - 1):
        assert_error(_login_from(api, addr, account["email"], "wrong password"), 401)
    assert _login_from(api, addr, account["email"], PASSWORD).status_code == 200


def test_repeated_wrong_codes_are_429(limited, apis):
    addr = _addr()
    account = signup(limited.url)
    session = apis(account["token"], url=limited.url)
    session.session.headers["X-Forwarded-For"] = addr
    assert session.post("/auth/phone/send").status_code == 200
    code = read_code(limited, account["phone"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(MAX_ATTEMPTS):
        assert_error(session.post("/auth/phone/verify", json={"code": wrong}), 400, "invalid_code")
    _assert_429(session.post("/auth/phone/verify", json={"code": code}))
    # counted per account and address, like sign-in: from another address the code still works
    session.session.headers["X-Forwarded-For"] = _addr()
    assert session.post("/auth/phone/verify", json={"code": code}).status_code == 200


def test_repeated_wrong_codes_per_address_are_429(limited, apis):
    addr = _addr()
    for _ in range(ADDRESS_MAX_ATTEMPTS):
        account = signup(limited.url)
        session = apis(account["token"], url=limited.url)
        session.session.headers["X-Forwarded-For"] = addr
        assert_error(session.post("/auth/phone/verify", json={"code": "000000"}), 400, "invalid_code")
    fresh = apis(signup(limited.url)["token"], url=limited.url)
    fresh.session.headers["X-Forwarded-For"] = addr
    _assert_429(fresh.post("/auth/phone/verify", json={"code": "000000"}))


def test_repeated_code_sends_are_429(limited, apis):
    account = signup(limited.url)
    session = apis(account["token"], url=limited.url)
    for _ in range(TEXTS_PER_PHONE):
        assert session.post("/auth/phone/send").status_code == 200
    _assert_429(session.post("/auth/phone/send"), window=3600)
    assert len(read_codes(limited, account["phone"], count=TEXTS_PER_PHONE)) == TEXTS_PER_PHONE


# --- in-process checks of what the real server cannot show cheaply ---------------------


class _CapturingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, phone: str, text: str) -> None:
        self.sent.append((phone, text))

    def last_code(self) -> str:
        return self.sent[-1][1].rsplit(" ", 1)[-1]


@pytest.fixture
def small_limit_app(tmp_path: Path) -> Iterator[Any]:
    from telentir import close_app, create_app

    app = create_app(config_over(tmp_path / "data", log_level="WARNING", auth_address_max_attempts=2))
    yield app
    close_app(app)


def test_forwarded_for_is_ignored_without_trusted_proxies(small_limit_app):
    client = small_limit_app.test_client()
    for n in range(2):
        resp = client.post(
            "/api/auth/login",
            json={"email": unique_email(), "password": "wrong password"},
            headers={"X-Forwarded-For": f"10.0.0.{n}"},
        )
        assert resp.status_code == 401
    resp = client.post(
        "/api/auth/login",
        json={"email": unique_email(), "password": "wrong password"},
        headers={"X-Forwarded-For": "10.0.0.99"},
    )
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1


def test_expired_code_is_refused(rt):
    from telentir.errors import BadRequest
    from telentir.services import accounts

    sender = rt.sms = _CapturingSender()
    user = accounts.create_user(rt, unique_email(), unique_phone(), password=PASSWORD)
    accounts.send_phone_code(rt, user)
    assert sender.sent and sender.sent[-1][0] == user["phone"]
    with rt.db.atomic() as tx:
        tx.execute("UPDATE phone_codes SET expires_at = ? WHERE user_id = ?", (time.time() - 1, user["id"]))
    with pytest.raises(BadRequest) as info:
        accounts.verify_phone_code(rt, user, sender.last_code(), "127.0.0.1")
    assert info.value.code == "invalid_code"
    assert accounts.get_user(rt, user["id"])["phone_verified"] == 0


def test_code_expiry_follows_the_setting(rt):
    from telentir.services import accounts

    rt.sms = _CapturingSender()
    user = accounts.create_user(rt, unique_email(), unique_phone())
    before = time.time()
    accounts.send_phone_code(rt, user)
    row = rt.db.query_one("SELECT expires_at FROM phone_codes WHERE user_id = ?", (user["id"],))
    assert (
        before + rt.config.phone_code_ttl_seconds - 1
        <= row["expires_at"]
        <= time.time() + rt.config.phone_code_ttl_seconds
    )


def test_code_is_burnt_after_too_many_wrong_attempts(tmp_path):
    from telentir.errors import BadRequest
    from telentir.services import accounts

    rt = runtime_over(tmp_path / "d", auth_max_attempts=100)
    try:
        sender = rt.sms = _CapturingSender()
        user = accounts.create_user(rt, unique_email(), unique_phone())
        accounts.send_phone_code(rt, user)
        code = sender.last_code()
        for _ in range(accounts.CODE_ATTEMPTS):
            with pytest.raises(BadRequest):
                accounts.verify_phone_code(rt, user, "not-it", "127.0.0.1")
        with pytest.raises(BadRequest):
            accounts.verify_phone_code(rt, user, code, "127.0.0.1")
        accounts.send_phone_code(rt, user)  # a fresh code works again
        accounts.verify_phone_code(rt, user, sender.last_code(), "127.0.0.1")
        assert accounts.get_user(rt, user["id"])["phone_verified"] == 1
    finally:
        rt.close()


def test_passwords_and_api_keys_are_stored_only_as_hashes(rt):
    from telentir.services import accounts, credentials

    user = accounts.create_user(rt, unique_email(), unique_phone(), password=PASSWORD)
    key = credentials.create_api_key(rt, user["id"], "k")["key"]
    # Every row of every table that holds credentials, on either database.
    dump = "\n".join(
        repr(tuple(row)) for table in ("users", "api_keys") for row in rt.db.query(f"SELECT * FROM {table}")
    )
    assert PASSWORD not in dump and key not in dump
    assert rt.db.query_one("SELECT password_hash FROM users WHERE id = ?", (user["id"],))[0].startswith("scrypt$")


def _in_parallel(calls: list[Any]) -> list[requests.Response]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_parallel_wrong_passwords_cannot_outrun_the_limit(limited, apis):
    account = signup(limited.url)
    clients, addr = [apis(url=limited.url) for _ in range(12)], _addr()
    responses = _in_parallel(
        [lambda api=api: _login_from(api, addr, account["email"], "wrong password") for api in clients]
    )
    codes = sorted(resp.status_code for resp in responses)
    assert codes == [401] * MAX_ATTEMPTS + [429] * (len(clients) - MAX_ATTEMPTS)


def test_parallel_wrong_codes_cannot_outrun_the_limit(limited, apis):
    account = signup(limited.url)
    clients, addr = [apis(account["token"], url=limited.url) for _ in range(10)], _addr()
    clients[0].post("/auth/phone/send")
    responses = _in_parallel(
        [
            lambda api=api: api.post("/auth/phone/verify", json={"code": "not-it"}, headers={"X-Forwarded-For": addr})
            for api in clients
        ]
    )
    codes = sorted(resp.status_code for resp in responses)
    assert codes == [400] * MAX_ATTEMPTS + [429] * (len(clients) - MAX_ATTEMPTS)


def _limited_session(limited: ServerProcess, apis: Any, token: str) -> Api:
    session = apis(token, url=limited.url)
    session.session.headers["X-Forwarded-For"] = _addr()
    return session


def test_wrong_code_is_refused_and_right_code_still_works(limited, apis):
    account = signup(limited.url)
    session = _limited_session(limited, apis, account["token"])
    session.post("/auth/phone/send")
    code = read_code(limited, account["phone"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert_error(session.post("/auth/phone/verify", json={"code": wrong}), 400, "invalid_code")
    assert_error(session.post("/auth/phone/verify", json={}), 400, "invalid_request")
    assert session.post("/auth/phone/verify", json={"code": f" {code} "}).status_code == 200
    assert session.get("/auth").json()["auth"]["phoneVerified"] is True


def test_code_is_single_use(limited, apis):
    account = signup(limited.url)
    session = _limited_session(limited, apis, account["token"])
    session.post("/auth/phone/send")
    code = read_code(limited, account["phone"])
    assert session.post("/auth/phone/verify", json={"code": code}).status_code == 200
    assert_error(session.post("/auth/phone/verify", json={"code": code}), 400, "invalid_code")


def test_a_new_code_replaces_the_old_one(limited, apis):
    account = signup(limited.url)
    session = _limited_session(limited, apis, account["token"])
    session.post("/auth/phone/send")
    first = read_code(limited, account["phone"])
    session.post("/auth/phone/send")
    second = read_codes(limited, account["phone"], count=2)[-1]
    if second != first:  # one time in a million they are equal
        assert_error(session.post("/auth/phone/verify", json={"code": first}), 400, "invalid_code")
    assert session.post("/auth/phone/verify", json={"code": second}).status_code == 200

"""Abuse limits on accounts, against the real server at its default limits (docs/security.md).

Texts per phone, sign-ups per address, sign-in failures per (account, address), the CSRF rule
of logout and `Cache-Control: no-store` on answers that carry secrets. The counts are kept
box-wide: requests alternate between two keep-alive connections held by two different worker
processes (on the scale-out backend, two nodes on one PostgreSQL), so a count kept per
process would let twice as many through.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from telentir.services import accounts

from .. import backends
from ..cluster import Cluster
from ..sse_client import HttpConnection, StreamEnded, worker_pid
from ..support import FIXED_MASTER_KEY, ServerProcess, assert_error, running_server, runtime_over

PASSWORD = "correct horse battery"
METRICS_TOKEN = "limits-metrics-token-0123"
SETTINGS = {"TELENTIR_SIGNUP": "open", "TELENTIR_PROXY_HOPS": "1", "TELENTIR_METRICS_TOKEN": METRICS_TOKEN}
# The defaults the issue names (nothing below is set: the server runs with them).
TEXTS_PER_PHONE, SIGNUPS_PER_ADDRESS, FAILURES_PER_PAIR, WINDOW = 5, 10, 5, 900


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, storage_backend: str) -> Iterator[ServerProcess | Cluster]:
    """Two workers on the embedded backend; two nodes (one worker each) on one database when scaled out."""
    if storage_backend == backends.EMBEDDED:
        with running_server(tmp_path_factory, "limits", workers=2, **SETTINGS) as one:
            yield one
        return
    root = tmp_path_factory.mktemp("limits-cluster")
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, **SETTINGS, **backends.env_for(root / "a" / "data")}
    cluster = Cluster(root, env, 1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# --- helpers ------------------------------------------------------------------------------------


class Pair:
    """Two keep-alive connections served by two different processes; requests alternate between them.

    A connection the server closed (idle past gunicorn's keep-alive) is opened again to the same process.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.conns = _connections_to(base_url, None)
        self.pids = list(self.conns)
        self.turn = 0

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """One exchange on the next connection: (status, headers, JSON body or None)."""
        pid = self.pids[self.turn % 2]
        self.turn += 1
        data = b"" if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
        try:
            self.conns[pid].request("GET", "/healthz")  # still open? (cheap, and never counted by a limit)
        except (OSError, StreamEnded):
            self.conns[pid].close()
            self.conns.update(_connections_to(self.base_url, pid))
        status, answer_headers, raw = self.conns[pid].request(method, path, sent, data)
        return status, answer_headers, json.loads(raw) if raw else None

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def _connections_to(base_url: str, pid: int | None) -> dict[int, HttpConnection]:
    """A connection to each of two processes (`pid` None), or one to process `pid`; the other connections closed.

    The kernel picks which worker accepts; a worker still booting accepts nothing, so rounds of
    connections are tried for a while before giving up.
    """
    wanted, deadline = 2 if pid is None else 1, time.monotonic() + 60
    found: dict[int, HttpConnection] = {}
    while time.monotonic() < deadline:
        round_ = [HttpConnection(base_url) for _ in range(20)]  # held open together, as a browser would
        for conn in round_:
            try:
                served_by = worker_pid(conn)
            except (OSError, StreamEnded):
                served_by = -1
            if served_by >= 0 and served_by not in found and pid in (None, served_by) and len(found) < wanted:
                found[served_by] = conn
            else:
                conn.close()
        if len(found) == wanted:
            return found
        time.sleep(0.5)
    for conn in found.values():
        conn.close()
    raise AssertionError("one process answered every connection for a minute: the test would prove nothing")


@pytest.fixture
def pair(server: ServerProcess | Cluster) -> Iterator[Pair]:
    """Two connections to two processes of the module's server."""
    with closing(Pair(server.url)) as made:
        yield made


def fresh_addr() -> str:
    """A random client address (documentation range 198.18.0.0/15), sent as X-Forwarded-For."""
    return f"198.{18 + secrets.randbelow(2)}.{secrets.randbelow(256)}.{secrets.randbelow(256)}"


def signup_body(phone: str | None = None) -> dict[str, Any]:
    """A valid sign-up with a fresh email."""
    return {
        "email": f"limits-{uuid.uuid4().hex[:12]}@example.com",
        "phone": phone or "+1555" + "".join(secrets.choice("0123456789") for _ in range(7)),
        "password": PASSWORD,
        "confirmPassword": PASSWORD,
    }


def signup(url: str, phone: str | None = None) -> dict[str, Any]:
    """Register from an address of its own: the body sent plus the token."""
    body = signup_body(phone)
    resp = requests.post(url + "/api/auth/register", json=body, headers={"X-Forwarded-For": fresh_addr()}, timeout=30)
    assert resp.status_code == 201, resp.text
    return {**body, "token": resp.json()["token"]}


def assert_429(status: int, headers: dict[str, str], body: Any, low: int, high: int) -> None:
    """A rate_limited refusal whose Retry-After lies in [low, high]."""
    assert status == 429 and body["error"] == "rate_limited", (status, body)
    assert low <= int(headers["retry-after"]) <= high, headers


def refusals(server: ServerProcess | Cluster, limit: str) -> float:
    """telentir_limit_refusals_total{limit} summed over every node (each sums its own workers)."""
    nodes = list(server.nodes.values()) if isinstance(server, Cluster) else [server]
    total = 0.0
    for node in nodes:
        resp = requests.get(node.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
        assert resp.status_code == 200, resp.text[:300]
        for family in text_string_to_metric_families(resp.text):
            for sample in family.samples:
                if sample.name == "telentir_limit_refusals_total" and sample.labels == {"limit": limit}:
                    total += sample.value
    return total


# --- texts per phone ----------------------------------------------------------------------------


def test_eight_accounts_on_one_phone_get_at_most_five_texts(server, pair):
    digits = "1555" + "".join(secrets.choice("0123456789") for _ in range(7))
    # Two spellings of one number: counted as one.
    spellings = [f"+{digits}", f"{digits[0]} ({digits[1:4]}) {digits[4:7]}-{digits[7:]}"]
    users = [signup(server.url, spellings[n % 2]) for n in range(8)]
    before = refusals(server, "sms_per_phone_per_hour")
    answers = [
        pair.request("POST", "/api/auth/phone/send", headers={"Authorization": f"Bearer {u['token']}"}) for u in users
    ]
    assert [status for status, _, _ in answers] == [200] * TEXTS_PER_PHONE + [429] * (8 - TEXTS_PER_PHONE)
    for status, headers, body in answers[TEXTS_PER_PHONE:]:
        assert_429(status, headers, body, 3000, 3600)  # until the first text is an hour old
    texts = re.findall(rf"SMS to \+?{digits}: ", server.log())
    assert len(texts) == TEXTS_PER_PHONE, server.log()[-2000:]
    assert refusals(server, "sms_per_phone_per_hour") - before == 8 - TEXTS_PER_PHONE
    with closing(runtime_over(server.data_dir)) as rt:  # a refused send stored no code either
        ids = [accounts.find_user_by_email(rt, u["email"])["id"] for u in users]
        codes = [rt.db.query_one("SELECT 1 FROM phone_codes WHERE user_id = ?", (i,)) is not None for i in ids]
    assert codes == [True] * TEXTS_PER_PHONE + [False] * (8 - TEXTS_PER_PHONE)


# --- sign-ups per address -----------------------------------------------------------------------


def test_one_address_meets_a_429_within_fourteen_sign_ups(server, pair):
    addr, bodies = fresh_addr(), [signup_body() for _ in range(14)]
    before = refusals(server, "signups_per_address_per_hour")
    answers = [pair.request("POST", "/api/auth/register", body, {"X-Forwarded-For": addr}) for body in bodies]
    assert [status for status, _, _ in answers] == [201] * SIGNUPS_PER_ADDRESS + [429] * (14 - SIGNUPS_PER_ADDRESS)
    for status, headers, body in answers[SIGNUPS_PER_ADDRESS:]:
        assert_429(status, headers, body, 3000, 3600)
        assert "set-cookie" not in headers and "token" not in body
    with closing(runtime_over(server.data_dir)) as rt:
        made = [rt.db.query_one("SELECT 1 FROM users WHERE email = ?", (b["email"],)) is not None for b in bodies]
    assert made == [True] * SIGNUPS_PER_ADDRESS + [False] * (14 - SIGNUPS_PER_ADDRESS)
    assert refusals(server, "signups_per_address_per_hour") - before == 14 - SIGNUPS_PER_ADDRESS
    # another address still signs up
    status, _, _ = pair.request("POST", "/api/auth/register", signup_body(), {"X-Forwarded-For": fresh_addr()})
    assert status == 201


# --- sign-in failures ---------------------------------------------------------------------------


def test_the_owner_signs_in_from_another_address_after_an_attackers_failures(server, pair):
    owner = signup(server.url)
    attacker = {"X-Forwarded-For": fresh_addr()}
    before = refusals(server, "auth_max_attempts")
    guesses = [
        pair.request("POST", "/api/auth/login", {"email": owner["email"], "password": f"guess {n}"}, attacker)
        for n in range(10)
    ]
    assert [status for status, _, _ in guesses] == [401] * FAILURES_PER_PAIR + [429] * (10 - FAILURES_PER_PAIR)
    for status, headers, body in guesses[FAILURES_PER_PAIR:]:
        assert_429(status, headers, body, WINDOW - 120, WINDOW)
    # the attacker's address stays locked out of this account, even with the right password
    status, headers, body = pair.request(
        "POST", "/api/auth/login", {"email": owner["email"], "password": PASSWORD}, attacker
    )
    assert_429(status, headers, body, WINDOW - 120, WINDOW)
    # the owner, elsewhere, signs in at once, on either process
    for _ in range(2):
        owner_addr = {"X-Forwarded-For": fresh_addr()}
        status, _, body = pair.request(
            "POST", "/api/auth/login", {"email": owner["email"], "password": PASSWORD}, owner_addr
        )
        assert status == 200 and body["token"], body
    assert refusals(server, "auth_max_attempts") - before == 10 - FAILURES_PER_PAIR + 1


# --- logout needs the CSRF header with the cookie ----------------------------------------------


def _login(url: str, email: str) -> str:
    resp = requests.post(url + "/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def _alive(url: str, token: str) -> bool:
    return requests.get(url + "/api/auth", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200


def test_a_cookie_only_logout_is_403_and_ends_nothing(server):
    account = signup(server.url)
    token = _login(server.url, account["email"])
    with requests.Session() as browser:
        browser.cookies.set("token", token)
        resp = browser.get(server.url + "/api/auth/logout", timeout=30)
        body = assert_error(resp, 403, "csrf_header_missing")
        assert "X-Requested-With" in body["message"]
        assert "token=" not in resp.headers.get("Set-Cookie", "")  # the cookie is not cleared either
        assert _alive(server.url, token)
        # what the console sends: the header, so the session ends
        resp = browser.get(
            server.url + "/api/auth/logout", headers={"X-Requested-With": "telentir-console"}, timeout=30
        )
        assert resp.status_code == 200 and resp.json() == {"status": "logout"}
    assert not _alive(server.url, token)


def test_a_bearer_logout_needs_no_header(server):
    account = signup(server.url)
    token = _login(server.url, account["email"])
    resp = requests.get(server.url + "/api/auth/logout", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"status": "logout"}
    assert not _alive(server.url, token)


# --- secrets are not cached ---------------------------------------------------------------------


def _no_store(resp: requests.Response, status: int) -> requests.Response:
    assert resp.status_code == status, resp.text
    assert resp.headers.get("Cache-Control") == "no-store", (resp.request.method, resp.url, resp.headers)
    return resp


def test_every_answer_carrying_a_secret_is_no_store(server):
    body = signup_body()
    registered = requests.post(
        server.url + "/api/auth/register", json=body, headers={"X-Forwarded-For": fresh_addr()}, timeout=30
    )
    _no_store(registered, 201)  # a session token
    token = _no_store(
        requests.post(server.url + "/api/auth/login", json={"email": body["email"], "password": PASSWORD}, timeout=30),
        200,
    ).json()["token"]
    with closing(runtime_over(server.data_dir)) as rt:
        accounts.set_phone_verified(rt, accounts.find_user_by_email(rt, body["email"])["id"])
    with requests.Session() as api:
        api.headers["Authorization"] = f"Bearer {token}"
        base = server.url + "/api"
        _no_store(api.put(base + "/api-keys", json={"name": "ci"}, timeout=30), 201)  # the API key
        _no_store(api.get(base + "/root", timeout=60), 200)  # the custodial private key
        generated = _no_store(api.post(base + "/servers", json={"name": "laptop", "mode": "generate"}, timeout=60), 201)
        assert generated.json()["privateKey"]
        material = {"server": "default", "key": "00" * 256, "iv": "00" * 12}
        key_id = api.put(base + "/keys", json=material, timeout=30).json()
        _no_store(api.get(f"{base}/keys/{key_id}", timeout=30), 200)  # the wrapped key
        _no_store(api.post(base + "/keys", json=material, timeout=30), 201)
        _no_store(api.patch(f"{base}/keys/{key_id}", json={"metadata": {"a": 1}}, timeout=30), 200)
        # the control: an answer without a secret keeps the default
        assert "no-store" not in api.get(base + "/auth", timeout=30).headers.get("Cache-Control", "")

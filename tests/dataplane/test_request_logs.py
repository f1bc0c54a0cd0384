"""Request logs: one structured line per request, one timestamp format, request ids, no secrets."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import re
from pathlib import Path

import pytest
import requests
import simple_websocket

from telentir import logs

from ..sse_client import Refused, must_open, open_stream
from ..support import FIXED_MASTER_KEY, ServerProcess

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
METRICS_TOKEN = "metrics-secret-token-42"
PASSWORD = "correct horse battery staple"


def log_lines(server: ServerProcess) -> list[dict]:
    """Every line the server wrote, each parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def request_lines(server: ServerProcess) -> list[dict]:
    return [line for line in log_lines(server) if line["logger"] == "telentir.request_log"]


@pytest.fixture
def server(tmp_path: Path):
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_LOG_LEVEL": "DEBUG",  # the most the server ever says
        "TELENTIR_METRICS_TOKEN": METRICS_TOKEN,
        "TELENTIR_PROXY_HOPS": "1",
        "TELENTIR_SIGNUP": "open",  # the session starts by registering over the API
    }
    srv = ServerProcess(tmp_path / "data", env).start()
    yield srv
    srv.discard()


def test_a_full_session_logs_every_request_and_no_secret(server):
    """Register, log in, verify a phone, mint and use API keys, stream, mirror, scrape, log out:
    every credential, password and token the session used is then looked for in the log."""
    base, secrets_used = server.url, [PASSWORD, METRICS_TOKEN, FIXED_MASTER_KEY]
    session = requests.Session()
    reg = session.post(
        base + "/api/auth/register",
        json={"email": "ada@example.com", "phone": "+15555550100", "password": PASSWORD, "confirmPassword": PASSWORD},
        timeout=10,
    )
    assert reg.status_code == 201, reg.text
    token = reg.json()["token"]
    login = requests.post(base + "/api/auth/login", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10)
    session_token = login.json()["token"]
    bad = requests.post(base + "/api/auth/login", json={"email": "ada@example.com", "password": "nope" + PASSWORD})
    assert bad.status_code == 401
    auth = {"Authorization": f"Bearer {session_token}"}
    assert requests.post(base + "/api/auth/phone/send", headers=auth, timeout=10).status_code == 200
    # The `log` SMS sender writes the code to the log by design (development): read it there.
    code = re.search(r"\b(\d{6})\b", [line for line in log_lines(server) if "code" in line["message"]][-1]["message"])
    assert code is not None
    verified = requests.post(base + "/api/auth/phone/verify", json={"code": code.group(1)}, headers=auth, timeout=10)
    assert verified.status_code == 200, verified.text
    minted = requests.put(base + "/api/api-keys", json={"name": "ci"}, headers=auth, timeout=10).json()
    api_key = minted["key"]
    key_auth = {"Authorization": f"Bearer {api_key}"}
    root = requests.get(base + "/api/root", headers=key_auth, timeout=10).json()
    private_key = root["servers"]["default"]["privateKey"]
    store = root["stores"]["contacts"]
    created = requests.put(
        base + "/api/objects",
        json={"keyId": store["defaultKey"], "content": "ab" * 20, "authTag": "cd" * 16, "relatedId": store["id"]},
        headers=key_auth,
        timeout=10,
    )
    assert created.status_code == 201
    assert requests.get(base + f"/api/objects/{created.json()['id']}?token={api_key}", timeout=10).status_code == 401
    cookie = requests.get(base + "/api/auth", cookies={"token": token}, timeout=10)
    assert cookie.status_code == 200
    # A credential in a query string is refused (an unknown parameter), and never logged either.
    refused = open_stream(base, "object_created", api_key, params={"access_token": api_key})
    assert isinstance(refused, Refused) and refused.status == 400
    with must_open(base, "object_created", api_key) as stream:
        requests.put(
            base + "/api/objects",
            json={"keyId": store["defaultKey"], "content": "01", "authTag": "cd" * 16},
            headers=key_auth,
            timeout=10,
        )
        stream.next_event()
    ws = simple_websocket.Client.connect(
        base.replace("http://", "ws://") + "/api/ws/events/object_created", headers=key_auth
    )
    ws.close()
    scraped = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert scraped.status_code == 200
    requests.get(base + "/metrics", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert requests.get(base + "/api/auth/logout", headers=auth, timeout=10).status_code == 200
    secrets_used += [token, session_token, api_key, private_key, minted["id"] + api_key]
    server.stop()

    text = server.log()
    leaked = [secret for secret in secrets_used if secret in text]
    assert leaked == [], "secrets in the log"
    for fragment in (api_key[4:20], token.split(".")[2][:16], session_token.split(".")[2][:16]):
        assert fragment not in text
    lines = request_lines(server)
    routes = {(line["method"], line["route"], line["status"]) for line in lines}
    assert ("POST", "/api/auth/register", 201) in routes
    assert ("GET", "/api/objects/<object_id>", 401) in routes
    assert ("GET", "/api/events/<event_type>", 200) in routes
    assert ("GET", "/api/ws/events/<event_type>", 101) in routes
    assert ("GET", "/metrics", 200) in routes and ("GET", "/metrics", 401) in routes
    assert all("?" not in line["route"] for line in lines)
    user_ids = {line["user_id"] for line in lines if line["route"] == "/api/root"}
    assert user_ids and all(uid and uid.startswith("usr_") for uid in user_ids)


def test_every_line_shares_one_format_and_one_timestamp(server):
    requests.get(server.url + "/healthz", timeout=10)
    requests.get(server.url + "/nowhere", timeout=10)
    server.stop()
    lines = log_lines(server)
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "telentir.request_log"} <= loggers  # gunicorn's own lines and the app's
    for line in lines:
        assert TIME.fullmatch(line["time"]), line
        assert {"level", "logger", "pid", "message"} <= set(line)
    for line in request_lines(server):
        assert {"request_id", "method", "route", "status", "duration_ms", "bytes", "user_id"} <= set(line)
        assert isinstance(line["duration_ms"], float) and line["bytes"] > 0


def test_request_ids_from_a_trusted_proxy_are_kept_and_bad_ones_replaced(server):
    kept = requests.get(server.url + "/healthz", headers={"X-Request-ID": "edge-1234.abc"}, timeout=10)
    assert kept.headers["X-Request-ID"] == "edge-1234.abc"
    for bad in ("has space", "x" * 200, 'quote"d', "new\\nline"):
        resp = requests.get(server.url + "/healthz", headers={"X-Request-ID": bad}, timeout=10)
        assert resp.headers["X-Request-ID"] != bad and len(resp.headers["X-Request-ID"]) == 24
    error = requests.get(server.url + "/api/root", headers={"X-Request-ID": "edge-err"}, timeout=10)
    assert error.status_code == 401 and error.headers["X-Request-ID"] == "edge-err"
    server.stop()
    assert any(line["request_id"] == "edge-err" and line["status"] == 401 for line in request_lines(server))


def test_gunicorn_access_logfile_sends_the_request_lines_to_that_file(tmp_path):
    access = tmp_path / "access.log"
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_LOG_LEVEL": "INFO",
        "GUNICORN_CMD_ARGS": f"--access-logfile {access}",
    }
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        requests.get(server.url + "/healthz", timeout=10)
    finally:
        server.stop()
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert lines and all(line["logger"] == "telentir.request_log" for line in lines)
    assert "telentir.request_log" not in server.log()


def test_a_terminal_gets_readable_lines_and_a_pipe_gets_json():
    primary, replica = os.openpty()
    with os.fdopen(replica, "w") as tty:
        assert logs.use_json("auto", tty) is False
    os.close(primary)
    assert logs.use_json("auto", io.StringIO()) is True
    assert logs.use_json("text", io.StringIO()) is False and logs.use_json("json", io.StringIO()) is True
    record = logging.LogRecord("telentir.api", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    record.created = 0.5
    # Outside any request (an in-process test client may leave an unclosed response's id set).
    text = contextvars.Context().run(logs.LogFormatter(json_lines=False).format, record)
    assert text.startswith("1970-01-01T00:00:00.500Z WARNING [") and text.endswith("telentir.api: hello there")
    line = json.loads(contextvars.Context().run(logs.LogFormatter(json_lines=True).format, record))
    assert line["time"] == "1970-01-01T00:00:00.500Z" and line["message"] == "hello there"

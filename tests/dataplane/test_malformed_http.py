"""HTTP that gunicorn refuses before the app is called still gets the JSON error shape.

Raw sockets against real servers, one per worker class (gthread, gevent): a malformed
request line, bad or too many headers, a bad Content-Length or Transfer-Encoding, a broken
chunked body. Each answer is `{"error", "message"}` with its 4xx status, never HTML.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger

from telentir.workers import WORKER_CLASSES
from telentir.workers.gthread import ThreadWorker

from ..support import FIXED_MASTER_KEY, ServerProcess

LOGIN = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module", params=sorted(WORKER_CLASSES))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with each worker class `serve --worker-class` offers."""
    data_dir = tmp_path_factory.mktemp(f"malformed-{request.param}") / "data"
    srv = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY}, worker_class=request.param).start()
    yield srv
    srv.discard()


def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def parse_answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response in `raw` (status, lowercased headers, body), by Content-Length."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        answers.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return answers


def assert_json_error(raw: bytes, status: int, code: str) -> dict[str, Any]:
    """`raw` is exactly one answer: `status`, JSON error body `code`, and the connection closes."""
    answers = parse_answers(raw)
    assert len(answers) == 1, raw[:600]
    got, headers, body = answers[0]
    assert got == status, raw[:600]
    assert headers["content-type"] == "application/json", headers
    assert len(headers.get("x-request-id", "")) == 24, headers  # every answer names itself for the log
    assert b"<html" not in body.lower()
    decoded = json.loads(body)
    assert decoded["error"] == code and decoded["message"].strip(), decoded
    return dict(decoded)


@pytest.mark.parametrize(
    "request_bytes, status, code",
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, "invalid_request", id="request-line"),
        pytest.param(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request", id="method"),
        pytest.param(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400, "invalid_request", id="version"),
        pytest.param(b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "invalid_request", id="bare-lf"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nBad Name: 1\r\n\r\n", 400, "invalid_request", id="header-name"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n", 400, "invalid_request", id="header-line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n", 400, "invalid_request", id="folding"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400, "invalid_request", id="nul-in-header"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
            id="header-too-large",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % n for n in range(150)) + b"\r\n",
            431,
            "request_header_fields_too_large",
            id="too-many-headers",
        ),
        pytest.param(LOGIN + b"Content-Length: -1\r\n\r\n", 400, "invalid_request", id="negative-length"),
        pytest.param(LOGIN + b"Content-Length: 1x\r\n\r\n", 400, "invalid_request", id="non-numeric-length"),
        pytest.param(
            LOGIN + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "invalid_request", id="two-lengths"
        ),
        pytest.param(
            LOGIN + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "invalid_request",
            id="length-and-chunked",
        ),
        pytest.param(LOGIN + b"Transfer-Encoding: gzip\r\n\r\n", 400, "invalid_request", id="unknown-coding"),
        pytest.param(LOGIN + b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed", id="expect"),
    ],
)
def test_what_gunicorn_refuses_is_a_json_error(server: ServerProcess, request_bytes: bytes, status: int, code: str):
    assert_json_error(exchange(server, request_bytes), status, code)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"zz\r\n{}\r\n0\r\n\r\n", id="chunk-size"),
        pytest.param(b"2\r\n{}XX0\r\n\r\n", id="chunk-terminator"),
        pytest.param(b"2;\x01\r\n{}\r\n0\r\n\r\n", id="chunk-extension"),
    ],
)
def test_a_malformed_chunked_body_is_a_json_400_and_one_answer(server: ServerProcess, chunks: bytes):
    """The app reads the body, so the parse error reaches it: a 400 (not a 500), then the connection closes."""
    head = LOGIN + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = assert_json_error(exchange(server, head + chunks), 400, "invalid_request")
    assert "body" in body["message"]


def test_a_good_request_after_a_refused_one_is_served(server: ServerProcess):
    assert_json_error(exchange(server, b"GARBAGE\r\n\r\n"), 400, "invalid_request")
    answers = parse_answers(exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert [status for status, _, _ in answers] == [200]


def test_a_failure_before_the_response_starts_is_a_json_500_without_details():
    """gunicorn's own 500 (the app failed before sending headers) carries the generic JSON body."""
    cfg = GunicornConfig()
    worker = ThreadWorker(0, 0, [], None, 30, cfg, Logger(cfg))
    ours, theirs = socket.socketpair()
    try:
        try:
            raise RuntimeError("database password is hunter2")
        except RuntimeError as exc:  # as gunicorn calls it: from its except clause
            worker.handle_error(None, ours, ("127.0.0.1", 1), exc)
        ours.shutdown(socket.SHUT_WR)
        raw = theirs.recv(65536)
    finally:
        ours.close()
        theirs.close()
        worker.tmp.close()
    body = assert_json_error(raw, 500, "internal_error")
    assert "hunter2" not in json.dumps(body)

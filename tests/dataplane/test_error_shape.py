"""Every failure answers the one JSON error shape `{"error", "message"}`, never an HTML page."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from telentir import close_app, create_app
from telentir import errors as errors_module
from telentir.errors import ApiError, RateLimited, error_body

from ..support import Api, assert_error, config_over

REGISTER = "/api/auth/register"
VALID_SIGNUP = {
    "firstName": "Ada",
    "lastName": "L",
    "email": "ada@example.com",
    "phone": "+15555550123",
    "password": "correct horse",
    "confirmPassword": "correct horse",
}


def assert_error_shape(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The Flask test response is the JSON error shape with this status (and code)."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/json", resp.headers.get("Content-Type")
    body = resp.get_json()
    assert set(body) >= {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"] == body["error"].lower() and " " not in body["error"]
    assert isinstance(body["message"], str) and body["message"].strip(), body
    assert "<html" not in resp.get_data(as_text=True).lower()
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.fixture
def small_app(tmp_path: Path) -> Iterator[Flask]:
    """An app that accepts bodies of at most 1 kB (and sign-ups), with a route that fails unexpectedly."""
    app = create_app(config_over(tmp_path / "small", log_level="WARNING", max_body_bytes=1024, signup="open"))

    @app.get("/test/boom")
    def boom() -> str:
        raise RuntimeError("database password is hunter2")

    @app.get("/test/api-error")
    def api_error() -> str:
        raise RateLimited(retry_after=7)

    yield app
    close_app(app)


# --- routing --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/auth/nope", "/api/objects/obj_x/y/z", "/favicon.ico"])
def test_unknown_route_is_404_json(client, path):
    assert_error_shape(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("get", REGISTER, {"POST"}),
        ("put", "/api/auth/login", {"POST"}),
        ("post", "/api/auth", {"GET"}),
        ("delete", "/healthz", {"GET"}),
        ("post", "/api/api-keys", {"GET", "PUT"}),
    ],
)
def test_wrong_method_is_405_json_with_allow(client, method, path, allowed):
    resp = getattr(client, method)(path)
    assert_error_shape(resp, 405, "method_not_allowed")
    listed = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= listed and method.upper() not in listed


# --- bodies ---------------------------------------------------------------------------


def test_body_over_the_limit_is_413(small_app):
    resp = small_app.test_client().post(REGISTER, data="{" + " " * 2000 + "}", content_type="application/json")
    assert_error_shape(resp, 413, "payload_too_large")


def test_body_under_the_limit_is_read(small_app):
    resp = small_app.test_client().post(REGISTER, json=VALID_SIGNUP)
    assert resp.status_code == 201, resp.get_data(as_text=True)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_json_body_to_a_json_route_is_415(client, content_type):
    resp = client.post(REGISTER, data='{"email": "a@b.co"}', content_type=content_type)
    assert_error_shape(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body", ["{bad", '{"email": ', "\xff\xfe", '{"a": NaN}', '{"a": -Infinity}', "[" * 100_000 + "]" * 100_000]
)
def test_malformed_json_is_400(client, body):
    resp = client.post(
        REGISTER, data=body.encode("latin-1") if body == "\xff\xfe" else body, content_type="application/json"
    )
    assert_error_shape(resp, 400, "invalid_json")


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null"])
def test_json_that_is_not_an_object_is_400(client, body):
    assert_error_shape(client.post(REGISTER, data=body, content_type="application/json"), 400, "invalid_request")


def test_missing_body_is_400(client):
    assert_error_shape(client.post(REGISTER), 400, "invalid_request")


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"email": "not-an-email"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"password": "short", "confirmPassword": "short"}, "password"),
        ({"confirmPassword": "something else"}, "confirmPassword"),
        ({"firstName": ["not", "a", "string"]}, "firstName"),
        ({"email": 42}, "email"),
    ],
)
def test_validation_errors_are_400_naming_the_field(client, change, fragment):
    body = assert_error_shape(client.post(REGISTER, json={**VALID_SIGNUP, **change}), 400, "invalid_request")
    assert fragment in body["message"]


def test_login_with_non_string_fields_is_400(client):
    assert_error_shape(client.post("/api/auth/login", json={"email": ["x"], "password": 1}), 400)


def test_duplicate_registration_is_409(client):
    assert client.post(REGISTER, json=VALID_SIGNUP).status_code == 201
    assert_error_shape(client.post(REGISTER, json=VALID_SIGNUP), 409, "email_taken")


# --- credentials ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "tlk_abc", "Bearer tlk_unknown", "Bearer a.b.c"]
)
def test_bad_credentials_are_401_json(client, header):
    headers = {"Authorization": header} if header is not None else {}
    assert_error_shape(client.get("/api/auth", headers=headers), 401)


# --- the unexpected -------------------------------------------------------------------


def test_unexpected_exception_is_500_generic_with_detail_only_in_the_log(small_app, caplog):
    caplog.set_level(logging.ERROR, logger="telentir.api")
    resp = small_app.test_client().get("/test/boom")
    body = assert_error_shape(resp, 500, "internal_error")
    assert "hunter2" not in resp.get_data(as_text=True) and "RuntimeError" not in body["message"]
    assert body == {"error": "internal_error", "message": body["message"]}
    records = [r for r in caplog.records if r.name == "telentir.api" and r.levelno == logging.ERROR]
    assert records and records[-1].exc_info is not None
    assert "hunter2" in caplog.text and "RuntimeError" in caplog.text


def test_api_errors_keep_their_status_and_retry_after(small_app):
    resp = small_app.test_client().get("/test/api-error")
    assert_error_shape(resp, 429, "rate_limited")
    assert resp.headers["Retry-After"] == "7"


# --- the error family -----------------------------------------------------------------


def test_error_body_is_the_canonical_shape():
    assert error_body("not_found", "No such object.") == {"error": "not_found", "message": "No such object."}
    assert error_body("x", "y", status="error") == {"error": "x", "message": "y", "status": "error"}


def _error_classes() -> list[type[ApiError]]:
    return [c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, ApiError)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_status_and_snake_case_code(cls):
    assert 400 <= cls.status <= 599
    assert cls.code and cls.code == cls.code.lower() and " " not in cls.code
    error = cls(retry_after=3) if cls is RateLimited else cls()
    assert error.body()["error"] == cls.code and error.body()["message"]


def test_rate_limited_retry_after_is_at_least_one_second():
    assert RateLimited(retry_after=0).retry_after == 1
    assert RateLimited(retry_after=-5).retry_after == 1


# --- the real server ------------------------------------------------------------------


def test_real_server_answers_json_errors(live_server):
    api = Api(live_server.url)
    try:
        assert_error(api.get("/no-such-route"), 404, "not_found")
        resp = api.get("/auth/register")
        assert_error(resp, 405, "method_not_allowed")
        assert "POST" in resp.headers["Allow"]
        assert_error(
            api.post("/auth/register", data="{bad", headers={"Content-Type": "application/json"}), 400, "invalid_json"
        )
        assert_error(
            api.post("/auth/register", data="x=1", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
        assert_error(api.get("/auth"), 401)
    finally:
        api.close()


def test_real_server_refuses_a_body_over_the_limit(live_server):
    too_big = b"{" + b" " * (16 * 1024 * 1024) + b"}"
    with requests.Session() as session:
        try:
            resp = session.post(
                live_server.url + REGISTER, data=too_big, headers={"Content-Type": "application/json"}, timeout=30
            )
        except requests.ConnectionError:
            pytest.fail("the server dropped the connection instead of answering 413")
        with resp:
            assert_error(resp, 413, "payload_too_large")


def test_real_server_refuses_a_chunked_body_over_the_limit(live_server):
    limit = 16 * 1024 * 1024
    chunk = b" " * (1024 * 1024)

    def body():  # valid JSON prefix, then more than the limit of padding, no Content-Length
        yield b'{"email": "chunked@example.com"'
        for _ in range(limit // len(chunk) + 1):
            yield chunk
        yield b"}"

    with requests.Session() as session:
        try:
            resp = session.post(
                live_server.url + REGISTER, data=body(), headers={"Content-Type": "application/json"}, timeout=30
            )
        except requests.ConnectionError:
            pytest.fail("the server dropped the connection instead of answering 413")
        with resp:
            assert "Content-Length" not in resp.request.headers
            assert_error(resp, 413, "payload_too_large")


def test_real_server_reads_a_chunked_body_under_the_limit(live_server):
    def body():
        yield b'{"email": "not-an-email", '
        yield b'"password": "x"}'

    with requests.Session() as session:
        with session.post(
            live_server.url + REGISTER, data=body(), headers={"Content-Type": "application/json"}, timeout=30
        ) as resp:
            assert_error(resp, 400, "invalid_request")  # parsed, then refused for its content

"""Accounts and credentials: /api/auth/*, /api/api-keys (docs/protocol.md §8)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..errors import Unauthorized
from ..services import accounts, credentials, quotas
from .common import (
    authenticated_user,
    bearer_credential,
    client_addr,
    json_body,
    no_store,
    require_csrf_header,
    runtime,
)

bp = Blueprint("auth", __name__, url_prefix="/api")


def _status(user: dict[str, Any]) -> str:
    return "ok" if user["phone_verified"] else "phone_not_verified"


def _with_token_cookie(payload: dict[str, Any], token: str, status: int, remember: bool = False) -> Response:
    response = jsonify(payload)
    response.status_code = status
    config = runtime().config
    max_age = config.jwt_remember_ttl_seconds if remember else config.jwt_ttl_seconds
    response.set_cookie(
        "token", token, max_age=max_age, httponly=True, samesite="Lax", secure=config.cookie_secure, path="/"
    )
    return response


@bp.post("/auth/register")
@no_store
def register() -> Response:
    """Create an account if TELENTIR_SIGNUP allows; the phone must be verified before the data plane opens."""
    accounts.check_signup_open(runtime())  # a closed server answers 403 whatever the body
    user = accounts.register(runtime(), json_body(), client_addr())
    token = credentials.issue_token(runtime(), user["id"])
    return _with_token_cookie({"status": "phone_not_verified", "token": token}, token, 201)


@bp.post("/auth/login")
@no_store
def login() -> Response:
    """Exchange email + password for a session token."""
    body = json_body()
    remember = bool(body.get("remember"))
    user = accounts.login(runtime(), body.get("email"), body.get("password"), client_addr())
    token = credentials.issue_token(runtime(), user["id"], remember=remember)
    return _with_token_cookie({"status": _status(user), "token": token}, token, 200, remember)


@bp.get("/auth")
def whoami() -> Response:
    """The calling user's profile and storage use."""
    user = authenticated_user()
    return jsonify(
        {"status": _status(user), "auth": accounts.public_profile(user), "usage": quotas.usage(runtime(), user)}
    )


@bp.get("/auth/logout")
def logout() -> Response:
    """Revoke the session token(s) used (header and cookie) and clear the cookie."""
    # A cross-site link or <img> would otherwise log the user out: with the cookie alone, the
    # request must prove it comes from a page that can set headers (not another site's).
    require_csrf_header()
    # Both: requests authenticate with the header first, so revoking only the cookie's token
    # would leave a header-borne session alive after "logout".
    for credential in {request.cookies.get("token"), _optional_bearer()}:
        if credential and not credential.startswith(credentials.API_KEY_PREFIX):
            credentials.revoke_token(runtime(), credential)
    response = jsonify({"status": "logout"})
    response.delete_cookie("token", path="/")
    return response


def _optional_bearer() -> str | None:
    try:
        return bearer_credential()
    except Unauthorized:  # a malformed header on logout is simply nothing to revoke
        return None


@bp.post("/auth/phone/send")
def send_phone_code() -> Response:
    """Send a one-time code to the account's phone."""
    accounts.send_phone_code(runtime(), authenticated_user())
    return jsonify({"status": "sent"})


@bp.post("/auth/phone/verify")
def verify_phone() -> Response:
    """Check the one-time code and mark the phone verified."""
    accounts.verify_phone_code(runtime(), authenticated_user(), json_body().get("code"), client_addr())
    return jsonify({"status": "ok"})


@bp.put("/api-keys")
@no_store
def create_api_key() -> tuple[Response, int]:
    """Create an API key; the answer is the only time the key is shown."""
    record = credentials.create_api_key(runtime(), authenticated_user()["id"], json_body(required=False).get("name"))
    return jsonify(record), 201


@bp.get("/api-keys")
def list_api_keys() -> Response:
    """The caller's API keys, without the secrets."""
    return jsonify(credentials.list_api_keys(runtime(), authenticated_user()["id"]))


@bp.delete("/api-keys/<key_id>")
def revoke_api_key(key_id: str) -> tuple[str, int]:
    """Revoke an API key at once."""
    credentials.revoke_api_key(runtime(), key_id, authenticated_user()["id"])
    return "", 204

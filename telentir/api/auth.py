"""Accounts and credentials: /api/auth/*, /api/api-keys (docs/protocol.md §8)."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, Response, jsonify, request
from msgspec import Meta

from ..errors import Conflict, Unauthorized
from ..services import accounts, credentials, quotas, twofactor
from ..storage.rows import UserRow
from .common import (
    authenticated_principal,
    authenticated_user,
    bearer_credential,
    client_addr,
    json_body,
    no_store,
    require_csrf_header,
    runtime,
    session_principal,
)
from .registry import Answer, Header, operation
from .types.accounts import (
    ApiKey,
    ApiKeyCreate,
    AuthToken,
    CodeBody,
    Login,
    NewSession,
    PasswordChange,
    RecoveryCodes,
    Register,
    ResetConfirm,
    ResetRequest,
    Status,
    TwoFactorSetup,
    WhoAmI,
)
from .types.base import ApiKeyId
from .types.examples import API_KEY_EXAMPLE, EXAMPLE_IDS, TOKEN_EXAMPLE

bp = Blueprint("auth", __name__, url_prefix="/api")

SET_COOKIE = Header("Set-Cookie", Annotated[str, Meta(pattern="^token=")])
CODE_EXAMPLE = {"code": "123456"}
SIGNUP_EXAMPLE = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "phone": "+44 20 7946 0958",
    "password": "correct horse battery",
    "confirmPassword": "correct horse battery",
}
PROFILE_EXAMPLE = {
    "status": "ok",
    "auth": {
        "id": EXAMPLE_IDS["usr"],
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phoneVerified": True,
        "twoFactorEnabled": False,
    },
    "usage": {"bytes": 182_304, "quotaBytes": None},
}
SETUP_EXAMPLE = {
    "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    "otpauthUrl": "otpauth://totp/Telentir:ada@example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Telentir",
}
NEW_SESSION = Answer(type=NewSession, example=TOKEN_EXAMPLE, headers=(SET_COOKIE,))


def _status(user: UserRow) -> str:
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
@operation(
    "register",
    "Auth",
    "Create an account (sets the token cookie) if TELENTIR_SIGNUP allows it: else 403 signup_closed, "
    "invite_required or invite_invalid; 429 past the sign-ups of one address in an hour",
    ok=Answer(status=201, type=AuthToken, description="Created", example=TOKEN_EXAMPLE, headers=(SET_COOKIE,)),
    errors=(403, 409, 429),
    auth=None,
    body=Register,
    body_example=SIGNUP_EXAMPLE,
    secret=True,
)
@no_store
def register() -> Response:
    """Create an account if TELENTIR_SIGNUP allows; the phone must be verified before the data plane opens."""
    accounts.check_signup_open(runtime())  # a closed server answers 403 whatever the body
    user = accounts.register(runtime(), json_body(), client_addr())
    token = credentials.issue_token(runtime(), user["id"])
    return _with_token_cookie({"status": "phone_not_verified", "token": token}, token, 201)


@bp.post("/auth/login")
@operation(
    "login",
    "Auth",
    "Log in (sets the token cookie); with two-factor sign-in on, status 2fa_required and a "
    "limited token for POST /api/auth/2fa/verify instead (no cookie)",
    ok=Answer(type=AuthToken, example=TOKEN_EXAMPLE, headers=(Header("Set-Cookie", SET_COOKIE.type, required=False),)),
    errors=(401, 429),
    auth=None,
    body=Login,
    body_example={"email": "ada@example.com", "password": "correct horse battery", "remember": True},
    secret=True,
)
@no_store
def login() -> Response:
    """Exchange email + password for a session token."""
    body = json_body()
    remember = bool(body.get("remember"))
    user = accounts.login(runtime(), body.get("email"), body.get("password"), client_addr())
    if user["totp_enabled"]:
        # No cookie: the limited token must not replace a browser's session, and it only
        # reaches POST /api/auth/2fa/verify (sent as a bearer token).
        limited = credentials.issue_token(runtime(), user["id"], limited=True)
        return jsonify({"status": "2fa_required", "token": limited})
    token = credentials.issue_token(runtime(), user["id"], remember=remember)
    return _with_token_cookie({"status": _status(user), "token": token}, token, 200, remember)


@bp.get("/auth")
@operation(
    "get_profile",
    "Auth",
    "The caller's profile",
    ok=Answer(type=WhoAmI, example=PROFILE_EXAMPLE),
    auth="user",
)
def whoami() -> Response:
    """The calling user's profile and storage use (`status: 2fa_required` for a sign-in token awaiting its code)."""
    principal = authenticated_principal(allow_limited=True)
    user = principal.user
    status = "2fa_required" if principal.limited else _status(user)
    return jsonify({"status": status, "auth": accounts.public_profile(user), "usage": quotas.usage(runtime(), user)})


# --- two-factor sign-in -----------------------------------------------------------------


@bp.post("/auth/2fa/setup")
@operation(
    "setup_two_factor",
    "Two-factor",
    "A new pending TOTP secret and its otpauth URL (a session, not an API key: else 403 "
    "session_required); 409 2fa_already_enabled",
    ok=Answer(type=TwoFactorSetup, example=SETUP_EXAMPLE),
    errors=(403, 409),
    auth="user",
    secret=True,
)
@no_store
def twofa_setup() -> Response:
    """A new pending TOTP secret and its otpauth URL (replacing a pending one)."""
    return jsonify(twofactor.setup(runtime(), session_principal().user))


@bp.post("/auth/2fa/enable")
@operation(
    "enable_two_factor",
    "Two-factor",
    "Turn two-factor sign-in on with a code of the pending secret: ten single-use recovery codes, "
    "shown this once; 400 invalid_code; 409 2fa_not_set_up",
    ok=Answer(type=RecoveryCodes, example={"recoveryCodes": ["K7QD-M2XA-P9TF-WR3H"] * 10}),
    errors=(403, 409, 429),
    auth="user",
    body=CodeBody,
    body_example=CODE_EXAMPLE,
    secret=True,
)
@no_store
def twofa_enable() -> Response:
    """Turn 2FA on with a code of the pending secret; the answer is the only time the recovery codes are shown."""
    user = session_principal().user
    codes = accounts.enable_second_factor(runtime(), user, json_body().get("code"), client_addr())
    return jsonify({"recoveryCodes": codes})


@bp.post("/auth/2fa/verify")
@operation(
    "verify_two_factor",
    "Two-factor",
    "Exchange the limited token of a login and a TOTP or recovery code for a full session (sets the "
    "token cookie); 400 invalid_code; 409 2fa_not_required for a full session or an API key",
    ok=NEW_SESSION,
    errors=(409, 429),
    auth="user",
    body=CodeBody,
    body_example=CODE_EXAMPLE,
    secret=True,
)
@no_store
def twofa_verify() -> Response:
    """Exchange a sign-in token and a TOTP or recovery code for a full session (cookie too)."""
    principal = authenticated_principal(allow_limited=True)
    if not principal.limited:
        raise Conflict("This session is already signed in in full.", code="2fa_not_required")
    code = json_body().get("code")
    accounts.verify_second_factor(runtime(), principal.user, code, client_addr())
    # The sign-in token is spent: it cannot be exchanged twice.
    bearer = bearer_credential()
    if bearer is not None:
        credentials.revoke_token(runtime(), bearer)
    token = credentials.issue_token(runtime(), principal.user["id"])
    return _with_token_cookie({"status": "ok", "token": token}, token, 200)


@bp.post("/auth/2fa/disable")
@operation(
    "disable_two_factor",
    "Two-factor",
    "Turn two-factor sign-in off with a current code (a session); 400 invalid_code; 409 2fa_not_enabled",
    ok=Answer(type=Status, example={"status": "ok"}),
    errors=(403, 409, 429),
    auth="user",
    body=CodeBody,
    body_example=CODE_EXAMPLE,
)
def twofa_disable() -> Response:
    """Turn 2FA off, with a current code (TOTP or recovery)."""
    accounts.disable_second_factor(runtime(), session_principal().user, json_body().get("code"), client_addr())
    return jsonify({"status": "ok"})


# --- passwords --------------------------------------------------------------------------


@bp.post("/auth/password")
@operation(
    "change_password",
    "Passwords",
    "Change the password (a session): every session of the user is revoked and the answer carries a "
    "new one (sets the token cookie); API keys stay; 400 invalid_password",
    ok=NEW_SESSION,
    errors=(403, 429),
    auth="user",
    body=PasswordChange,
    body_example={"currentPassword": "correct horse battery", "newPassword": "a brand new passphrase"},
    secret=True,
)
@no_store
def change_password() -> Response:
    """Change the password: every session of the user is revoked, and the answer carries a new one."""
    user = session_principal().user
    body = json_body()
    accounts.change_password(runtime(), user, body.get("currentPassword"), body.get("newPassword"), client_addr())
    token = credentials.issue_token(runtime(), user["id"])
    return _with_token_cookie({"status": "ok", "token": token}, token, 200)


@bp.post("/auth/password/reset")
@operation(
    "request_password_reset",
    "Passwords",
    "Text a one-time reset code to the account's verified phone; 202 whether or not the account exists",
    ok=Answer(status=202, type=Status, description="Accepted", example={"status": "accepted"}),
    auth=None,
    body=ResetRequest,
    body_example={"email": "ada@example.com"},
)
def request_password_reset() -> tuple[Response, int]:
    """Text a reset code to the account's verified phone; 202 whether or not there is such an account."""
    accounts.request_password_reset(runtime(), json_body().get("email"))
    return jsonify({"status": "accepted"}), 202


@bp.post("/auth/password/reset/confirm")
@operation(
    "confirm_password_reset",
    "Passwords",
    "Set a new password with the texted code: every session revoked; 400 invalid_code; 429 past the sign-in attempts",
    ok=Answer(type=Status, example={"status": "ok"}),
    errors=(429,),
    auth=None,
    body=ResetConfirm,
    body_example={"email": "ada@example.com", "code": "123456", "newPassword": "a brand new passphrase"},
)
def confirm_password_reset() -> Response:
    """Set a new password with the texted code; every session of the user is revoked."""
    body = json_body()
    accounts.confirm_password_reset(
        runtime(), body.get("email"), body.get("code"), body.get("newPassword"), client_addr()
    )
    return jsonify({"status": "ok"})


@bp.get("/auth/logout")
@operation(
    "logout",
    "Auth",
    "Log out: revoke the session tokens of the header and cookie, clear the cookie "
    "(with the cookie alone, X-Requested-With is needed: else 403 csrf_header_missing)",
    ok=Answer(type=Status, example={"status": "logout"}),
    errors=(403,),
    auth=None,
)
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
@operation(
    "send_phone_code",
    "Auth",
    "Send a one-time code by SMS",
    ok=Answer(type=Status, example={"status": "sent"}),
    errors=(409, 429, 502),
    auth="user",
)
def send_phone_code() -> Response:
    """Send a one-time code to the account's phone."""
    accounts.send_phone_code(runtime(), authenticated_user())
    return jsonify({"status": "sent"})


@bp.post("/auth/phone/verify")
@operation(
    "verify_phone",
    "Auth",
    "Verify the phone with the code",
    ok=Answer(type=Status, example={"status": "ok"}),
    errors=(429,),
    auth="user",
    body=CodeBody,
    body_example=CODE_EXAMPLE,
)
def verify_phone() -> Response:
    """Check the one-time code and mark the phone verified."""
    accounts.verify_phone_code(runtime(), authenticated_user(), json_body().get("code"), client_addr())
    return jsonify({"status": "ok"})


@bp.put("/api-keys")
@operation(
    "create_api_key",
    "Auth",
    "Create an API key (the only time `key` is shown); 409 too_many_api_keys past the ceiling",
    ok=Answer(status=201, type=ApiKey, description="Created", example={**API_KEY_EXAMPLE, "key": "tlk_Zm9vYmFy"}),
    errors=(409,),
    auth="user",
    body=ApiKeyCreate,
    body_required=False,
    body_example={"name": "CI"},
    secret=True,
)
@no_store
def create_api_key() -> tuple[Response, int]:
    """Create an API key; the answer is the only time the key is shown."""
    record = credentials.create_api_key(runtime(), authenticated_user()["id"], json_body(required=False).get("name"))
    return jsonify(record), 201


@bp.get("/api-keys")
@operation(
    "list_api_keys",
    "Auth",
    "The caller's live API keys, oldest first",
    ok=Answer(type=list[ApiKey], example=[API_KEY_EXAMPLE]),
    auth="user",
)
def list_api_keys() -> Response:
    """The caller's API keys, without the secrets."""
    return jsonify(credentials.list_api_keys(runtime(), authenticated_user()["id"]))


@bp.delete("/api-keys/<key_id>")
@operation(
    "revoke_api_key",
    "Auth",
    "Revoke an API key at once",
    ok=Answer(status=204, description="Done (no body)"),
    errors=(404,),
    auth="user",
    path={"key_id": Annotated[ApiKeyId, Meta(description="ak_ id; anything else is a 404")]},
)
def revoke_api_key(key_id: str) -> tuple[str, int]:
    """Revoke an API key at once."""
    credentials.revoke_api_key(runtime(), key_id, authenticated_user()["id"])
    return "", 204

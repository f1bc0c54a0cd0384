"""What every blueprint needs: the runtime, the JSON body, the caller."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgspec
from flask import current_app, g, make_response, request

from ..errors import BadRequest, Forbidden, PayloadTooLarge, PhoneNotVerified, Unauthorized, UnsupportedMediaType
from ..request_log import USER_KEY
from ..runtime import Runtime
from ..services import audit, credentials
from ..storage.rows import UserRow
from .inputs import check_json_text

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# A cookie is an ambient credential: a page on another site can make the browser send it.
# A request that changes state with the cookie must carry this header, which such a page
# cannot add without a CORS preflight this server never approves (docs/protocol.md §1.2).
CSRF_HEADER = "X-Requested-With"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def no_store(view: F) -> F:
    """Mark every answer of a view `Cache-Control: no-store`: it carries a secret (a private key, a
    token, a key) that no browser cache, proxy or CDN may keep."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        response = make_response(view(*args, **kwargs))
        response.headers["Cache-Control"] = "no-store"
        return response

    return cast(F, wrapped)


def runtime() -> Runtime:
    """The app's Runtime."""
    return cast(Runtime, current_app.extensions["telentir"])


def json_body(required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; 415 if not JSON, 400 if malformed or not an object."""
    raw = _body_bytes()
    if not raw:
        if required:
            raise BadRequest("The request needs a JSON object body.")
        return {}
    if not request.is_json:
        raise UnsupportedMediaType("Send the body as application/json.")
    try:
        body = _decode_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.", code="invalid_json") from exc
    except RecursionError as exc:  # "[[[[…" deep enough to exhaust the parser's stack
        raise BadRequest("The body is nested too deeply.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    check_json_text(body)
    return body


def typed_body(shape: type[T]) -> T:
    """The JSON body (as `json_body` reads it) decoded as `shape`; 400 naming the field that does not fit."""
    try:
        return msgspec.convert(json_body(), shape)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{exc}.") from exc


def _body_bytes() -> bytes:
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    # A chunked body has no Content-Length, and werkzeug stops reading at the limit without
    # complaint: a body that fills the limit exactly may have been cut short, so look further.
    cut_short = request.content_length is None and limit is not None and len(raw) >= limit
    if cut_short and request.environ["wsgi.input"].read(1):
        raise PayloadTooLarge("The request body is too large.")
    return raw


def _decode_json(raw: bytes) -> Any:
    """The JSON value of `raw`, as the standard library reads it (NaN and Infinity refused).

    msgspec reads plain UTF-8 JSON five times faster (a 64 KiB object's body: 22 µs against
    110) and to the same values (exact integers, the last of duplicate keys). What it refuses
    is read again by the standard library, which has the last word: it also takes a UTF-8
    BOM, UTF-16/32, lone surrogates and numbers past a float, and words the error.
    """
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: stored as metadata they would make every later answer invalid JSON.
    raise ValueError(f"{name} is not a JSON value")


def client_addr() -> str:
    """The caller's address (ProxyFix has applied TELENTIR_PROXY_HOPS)."""
    return request.remote_addr or "unknown"


def bearer_credential() -> str | None:
    """The credential of `Authorization: Bearer …`, else the session token of the `token` cookie.

    A cookie write without CSRF_HEADER is a 403; an API key in the cookie is a 401.
    """
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Use Authorization: Bearer <token or API key>.")
        return value.strip()
    cookie = request.cookies.get("token") or None
    # The cookie is what a browser sends on its own: it carries the session of a login, never
    # a long-lived API key (which belongs in a header a program sets on purpose).
    if cookie is not None and cookie.startswith(credentials.API_KEY_PREFIX):
        raise Unauthorized("The token cookie carries session tokens only: send an API key as Authorization: Bearer.")
    if cookie is not None and request.method not in SAFE_METHODS:
        require_csrf_header()
    return cookie


def cookie_authenticated() -> bool:
    """Whether the credential is the `token` cookie (a browser's, sent by whatever page it is on)."""
    return not request.headers.get("Authorization") and bool(request.cookies.get("token"))


def require_csrf_header() -> None:
    """403 unless a cookie-authenticated request carries CSRF_HEADER, which no cross-site page can set.

    Every request that changes state needs it; so does a GET that does (the billing portal
    creates the Stripe customer).
    """
    if cookie_authenticated() and not request.headers.get(CSRF_HEADER, "").strip():
        raise Forbidden(
            f"A request authenticated by the token cookie that changes state needs the {CSRF_HEADER} header.",
            code="csrf_header_missing",
        )


def require_same_origin() -> None:
    """403 for a cookie-authenticated browser request from another origin (a WebSocket handshake cannot carry
    CSRF_HEADER, but browsers always send Origin with it)."""
    origin = request.headers.get("Origin")
    if origin is None or not cookie_authenticated():
        return
    own = f"{request.scheme}://{request.host}".lower()
    if origin.lower() != own and origin.lower().rstrip("/") not in runtime().config.return_origins:
        raise Forbidden("A cookie-authenticated WebSocket must come from this server's own pages.", code="forbidden")


def authenticated_principal(allow_limited: bool = False) -> credentials.Principal:
    """The calling user and the credential used (cached for the request); 401 without a valid credential.

    A sign-in token still waiting for its second factor is a 403 `2fa_required`, unless the
    route is one it may reach (`allow_limited`: GET /api/auth, POST /api/auth/2fa/verify).
    """
    if "principal" not in g:
        credential = bearer_credential()
        if credential is None:
            raise Unauthorized("Authentication required: send Authorization: Bearer <token or API key>.")
        g.principal = credentials.authenticate_principal(runtime(), credential)
        note_user(g.principal.user["id"])
        audit.act_as(credential="session" if g.principal.is_session else "api_key")
    principal = cast(credentials.Principal, g.principal)
    if principal.limited and not allow_limited:
        raise Forbidden(
            "Sign-in is waiting for the second factor: POST /api/auth/2fa/verify {code}.", code="2fa_required"
        )
    return principal


def session_principal() -> credentials.Principal:
    """The caller, who must hold a full session token (not an API key): else 403 `session_required`."""
    principal = authenticated_principal()
    if not principal.is_session:
        raise Forbidden("This needs a signed-in session, not an API key.", code="session_required")
    return principal


def authenticated_user() -> UserRow:
    """The calling user (cached for the request); 401 without a valid credential."""
    return authenticated_principal().user


def note_user(user_id: str) -> None:
    """Name the caller in the request's log line (the id only, never the credential)."""
    request.environ[USER_KEY] = user_id


def verified_user() -> UserRow:
    """The calling user, who must have a verified phone (the data-plane guard, objectAuth)."""
    user = authenticated_user()
    if not user["phone_verified"]:
        raise PhoneNotVerified()
    return user

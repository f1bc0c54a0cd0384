"""The account's life and the audit log: /api/account, /api/account/export, /api/audit (docs/protocol.md §10)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, stream_with_context

from ..services import audit, deletion, export
from .common import authenticated_user, client_addr, json_body, runtime, session_principal
from .registry import Answer, operation
from .types.account_life import AccountDelete, AuditPage, AuditQuery

bp = Blueprint("account", __name__, url_prefix="/api")

AUDIT_EXAMPLE = {
    "items": [
        {
            "id": 42,
            "at": "2026-11-29T07:31:56.123Z",
            "action": "api_key_created",
            "ip": "203.0.113.7",
            "credential": "session",
            "detail": {"apiKeyId": "ak_3x9TQm2ZkW8pLr4VbN7cYd", "name": "CI"},
        }
    ],
    "next": None,
}


@bp.before_app_request
def note_actor() -> None:
    """Every request starts the audit log's actor afresh: the client address, no credential yet."""
    audit.reset_actor()
    audit.act_as(ip=client_addr())


@bp.delete("/account")
@operation(
    "delete_account",
    "Account",
    "Delete the account for good (a session, not an API key: else 403 session_required): every credential "
    "stops, everything the user owns is erased; 400 invalid_password, or invalid_code when 2FA is on",
    ok=Answer(status=204, description="Deleted (no body)"),
    errors=(403, 429),
    auth="user",
    body=AccountDelete,
    body_example={"password": "the account's password"},
)
def delete_account() -> tuple[str, int]:
    """Delete the caller's account and everything it owns."""
    user = session_principal().user
    body = json_body()
    deletion.delete_own_account(runtime(), user, body.get("password"), body.get("code"), client_addr())
    return "", 204


@bp.get("/account/export")
@operation(
    "export_account",
    "Account",
    "Everything the account holds as NDJSON, one object per line, `kind` one of account, server, key, object, "
    "publication, each with the fields of its GET answer (the custodial private key included)",
    ok=Answer(
        type=str,
        description="NDJSON, streamed",
        media="application/x-ndjson",
        example='{"kind":"account","id":"usr_3x9TQm2ZkW8pLr4VbN7cYd","email":"ada@example.com"}\n',
    ),
    errors=(403, 429),
    auth="user",
    secret=True,
)
def export_account() -> Response:
    """Stream the caller's data, page by page (constant memory)."""
    user = authenticated_user()
    export.start(runtime(), user["id"])
    body = stream_with_context(export.lines(runtime(), user))
    return Response(body, mimetype="application/x-ndjson", headers={"Cache-Control": "no-store"})


@bp.get("/audit")
@operation(
    "get_audit",
    "Account",
    "The caller's audit log, newest first, a page at a time (`next` is the next page's `before`)",
    ok=Answer(type=AuditPage, example=AUDIT_EXAMPLE),
    errors=(403,),
    auth="user",
    query=AuditQuery,
)
def get_audit() -> Response:
    """A page of the caller's audit entries."""
    user = authenticated_user()
    limit, before = audit.parse_page(request.args.get("limit"), request.args.get("before"))
    return jsonify(audit.page(runtime(), user["id"], limit, before))

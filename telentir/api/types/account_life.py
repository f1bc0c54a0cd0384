"""The account's life and the audit log: DELETE /account, GET /account/export, GET /audit (docs/protocol.md §10)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, UnsetType

from ...services.audit import MAX_LIMIT
from .accounts import AnyPassword, Code
from .base import Schema, Timestamp

# The query values arrive as text; the server reads them as decimal integers (400 otherwise).
Digits = Annotated[str, Meta(pattern="^[0-9]{1,18}$")]
# 1 to MAX_LIMIT (500), as written.
PageSize = Annotated[str, Meta(pattern="^([1-9][0-9]?|[1-4][0-9][0-9]|500)$")]


class AccountDelete(Schema):
    """DELETE /account: the password, and a current code (TOTP or recovery) when 2FA is on."""

    password: AnyPassword
    code: Code | UnsetType = UNSET


class AuditQuery(Schema):
    """GET /audit's query: a page of `limit` entries older than the entry `before`."""

    limit: (
        Annotated[PageSize, Meta(description=f"1 to {MAX_LIMIT} entries (default 50)", examples=["50"])] | UnsetType
    ) = UNSET
    before: Annotated[Digits, Meta(description="the `next` of the previous page")] | UnsetType = UNSET


class AuditEntry(Schema):
    """One entry: what happened, when, from which address, with which kind of credential."""

    id: Annotated[int, Meta(ge=1)]
    at: Timestamp
    action: Annotated[str, Meta(pattern="^[a-z0-9_]+$", examples=["login"])]
    ip: str | None
    credential: Annotated[
        str | None,
        Meta(description="session, api_key, password (a sign-in), reset_code (a password reset) or cli (the operator)"),
    ]
    detail: Annotated[dict[str, Any], Meta(description="what changed (an API key's id and name…); never a secret")]


class AuditPage(Schema):
    """GET /audit: newest first; `next` is the `before` of the next page (null at the end)."""

    items: list[AuditEntry]
    next: Annotated[int, Meta(ge=1)] | None

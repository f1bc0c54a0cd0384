"""The rows of the tables services read most, as the type checker sees them.

`Database.query` returns rows of whatever the driver makes (`sqlite3.Row`, a psycopg row):
read by column name, they behave alike. The functions that read whole users, keys, objects
and jobs rows turn them into these dicts at one place (`as_row`), so mypy checks every field
name and type after that. Each TypedDict names exactly its table's columns
(`schema.sql`; `tests/unit/test_rows.py` keeps them equal). Integer flags (`phone_verified`,
`deprecated`…) are 0 or 1, as stored.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, TypeVar, cast


class UserRow(TypedDict):
    """A `users` row: an account."""

    id: str
    email: str
    first_name: str
    last_name: str
    phone: str
    phone_verified: int
    password_hash: str | None
    plan: str
    stripe_customer_id: str | None
    created_at: str
    stored_bytes: int
    totp_secret_sealed: bytes | None
    totp_enabled: int
    totp_last_step: int | None
    session_epoch: int
    disabled_at: str | None
    deleted_at: str | None


class KeyRow(TypedDict):
    """A `keys` row: an AES key wrapped for one server."""

    id: str
    user_id: str
    server: str
    wrapped: bytes
    iv: bytes
    metadata: str  # JSON text
    deprecated: int
    created_at: str
    updated_at: str


class ObjectRow(TypedDict):
    """An `objects` row: a ciphertext, inline or in a blob (exactly one of the two)."""

    n: NotRequired[int]  # the insertion order, given by the database (absent from a row as it is written)
    id: str
    user_id: str
    key_id: str
    blob: str | None
    inline_content: bytes | None
    size: int
    auth_tag: bytes
    related_id: str | None
    metadata: str  # JSON text
    created_at: str
    updated_at: str


class JobRow(TypedDict):
    """A `jobs` row: an ingestion job, its credits and its lease (`services/job_states.py` moves its state)."""

    id: str
    user_id: str
    status: str  # a JobStatus value
    repository: str
    store_id: str
    path: str
    params: str  # JSON text
    billing: str  # none | local | stripe
    customer_id: str | None
    created: int
    skipped: int
    requested: int
    granted: int
    allowance_part: int
    allowance_used: int
    price: int
    reserved: int
    used: int
    charged: int
    refunded: int
    settlement: str  # a Settlement value
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    owner: str | None
    heartbeat_at: float | None


RowT = TypeVar("RowT", UserRow, KeyRow, ObjectRow, JobRow)


def as_row(kind: type[RowT], row: Any) -> RowT:
    """A database row (any driver's) as the dict `kind` describes: the one place rows become typed."""
    return cast(RowT, dict(row))


def as_row_or_none(kind: type[RowT], row: Any) -> RowT | None:
    """`as_row`, or None when the query found nothing."""
    return None if row is None else as_row(kind, row)

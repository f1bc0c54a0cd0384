"""The audit log: what happened to an account, from which address, with which credential.

An entry is written in the transaction of the change it records (`record(tx, …)`), so a
change and its entry commit together or not at all; a change with no transaction of its own
(a failed sign-in, an export) writes its entry alone (`record_alone`). `detail` names what
changed (an API key's id and name, a server's name), never a secret.

Who acted comes from the request: the API layer sets the client address (after
TELENTIR_PROXY_HOPS) and the credential's kind (`act_as`); the operator's CLI acts as `cli`.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import BadRequest
from ..ids import iso, now_iso
from ..runtime import Runtime
from ..storage.db import Transaction

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
PRUNE_BATCH = 5000
ACCOUNT_DELETED = "account_deleted"


@dataclass(frozen=True)
class Actor:
    """Who acts: the client address and the kind of credential (session, api_key, password, reset_code, cli)."""

    ip: str | None = None
    credential: str | None = None


_actor: ContextVar[Actor] = ContextVar("telentir_audit_actor", default=Actor())  # noqa: B039 (frozen)


def act_as(ip: str | None = None, credential: str | None = None) -> None:
    """Set who acts for the rest of this request (or command); a None part keeps what was set."""
    current = _actor.get()
    _actor.set(replace(current, ip=ip or current.ip, credential=credential or current.credential))


def reset_actor() -> None:
    """Forget who acted (a request begins)."""
    _actor.set(Actor())


def actor() -> Actor:
    """Who acts now."""
    return _actor.get()


def record(tx: Transaction, user_id: str, action: str, detail: dict[str, Any] | None = None) -> None:
    """Write an entry in `tx`, the transaction of the change it records."""
    who = _actor.get()
    tx.execute(
        "INSERT INTO audit (user_id, at, action, ip, credential, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, now_iso(), action, who.ip, who.credential, json.dumps(detail or {}, separators=(",", ":"))),
    )


def record_alone(rt: Runtime, user_id: str, action: str, detail: dict[str, Any] | None = None) -> None:
    """Write an entry in a transaction of its own (the change it records has none)."""
    with rt.db.atomic() as tx:
        record(tx, user_id, action, detail)


def parse_page(limit: str | None, before: str | None) -> tuple[int, int | None]:
    """`limit` (1 to 500, default 50) and `before` (an entry id) of GET /audit; BadRequest otherwise."""
    size = DEFAULT_LIMIT if limit is None else _digits(limit, "limit")
    if not 1 <= size <= MAX_LIMIT:
        raise BadRequest(f"limit must be 1 to {MAX_LIMIT}.", code="invalid_request")
    cursor = None if before is None else _digits(before, "before")
    return size, cursor


def _digits(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{name} must be a decimal integer.", code="invalid_request")
    return int(value)


def page(rt: Runtime, user_id: str, limit: int, before: int | None) -> dict[str, Any]:
    """The user's entries, newest first, `limit` of them before the entry id `before`; `next` pages on."""
    rows = rt.db.query(
        "SELECT id, at, action, ip, credential, detail FROM audit WHERE user_id = ? AND id < ? "
        "ORDER BY id DESC LIMIT ?",
        (user_id, before if before is not None else 2**63 - 1, limit + 1),
    )
    items = [entry(r) for r in rows[:limit]]
    return {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}


def entry(row: Any) -> dict[str, Any]:
    """An entry as GET /audit answers it."""
    return {
        "id": row["id"],
        "at": row["at"],
        "action": row["action"],
        "ip": row["ip"],
        "credential": row["credential"],
        "detail": json.loads(row["detail"]),
    }


def search(rt: Runtime, user_ids: list[str] | None, action: str | None, limit: int) -> list[dict[str, Any]]:
    """The operator's view: entries of these users (None: everyone's), of one action or all, newest first."""
    clauses, params = [], []
    if user_ids is not None:
        clauses.append(f"user_id IN ({', '.join('?' for _ in user_ids)})" if user_ids else "1 = 0")
        params.extend(user_ids)
    if action is not None:
        clauses.append("action = ?")
        params.append(action)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = rt.db.query(
        f"SELECT id, user_id, at, action, ip, credential, detail FROM audit {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
        (*params, limit),
    )
    return [{**entry(r), "user_id": r["user_id"]} for r in rows]


def deleted_account_ids(rt: Runtime, email: str) -> list[str]:
    """The ids of deleted accounts that had this email (from their `account_deleted` entries)."""
    rows = rt.db.query("SELECT user_id, detail FROM audit WHERE action = ?", (ACCOUNT_DELETED,))
    wanted = email.strip().lower()
    return [r["user_id"] for r in rows if str(json.loads(r["detail"]).get("email", "")).lower() == wanted]


def prune(rt: Runtime) -> int:
    """Drop entries older than TELENTIR_AUDIT_RETENTION_DAYS, in small transactions; returns how many went."""
    cutoff = iso(datetime.now(UTC) - timedelta(days=rt.config.audit_retention_days))
    removed = 0
    while True:
        with rt.db.atomic() as tx:
            batch: int = tx.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? ORDER BY id LIMIT ?)",
                (cutoff, PRUNE_BATCH),
            ).rowcount
        removed += batch
        if batch < PRUNE_BATCH:
            return removed

"""Sign-up invitations for `TELENTIR_SIGNUP=invite`: minted by the operator, used once.

A code is shown once, when it is made; only its SHA-256 is kept (a code carries 192 random
bits, so a fast hash is enough). It is used up in the very transaction that creates its
account (`redeem`), so two registrations racing with one code make one account.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import BadRequest, Forbidden, NotFound
from ..ids import is_id, iso, new_id, now_iso
from ..runtime import Runtime
from ..storage.db import Transaction

CODE_PREFIX = "tli_"
MAX_NOTE = 200
MAX_CODE = 200


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def create_invite(
    rt: Runtime, plan: str | None = None, expires_in: timedelta | None = None, note: str = ""
) -> dict[str, Any]:
    """Mint an invite (plan None: the default plan at sign-up); the returned `code` is its only appearance."""
    if plan is not None and plan not in rt.config.plans:
        raise BadRequest(f"Unknown plan {plan!r}; the catalog has {', '.join(rt.config.plans)}.")
    if len(note) > MAX_NOTE:
        raise BadRequest(f"The note may be at most {MAX_NOTE} characters.")
    code = CODE_PREFIX + secrets.token_urlsafe(24)
    created = datetime.now(UTC)
    record = {
        "id": new_id("inv"),
        "plan": plan,
        "note": note,
        "created_at": iso(created),
        "expires_at": iso(created + expires_in) if expires_in is not None else None,
    }
    with rt.db.atomic() as tx:
        tx.execute(
            "INSERT INTO invites (id, code_hash, plan, note, created_at, expires_at) "
            "VALUES (:id, :code_hash, :plan, :note, :created_at, :expires_at)",
            {**record, "code_hash": _hash_code(code)},
        )
    return {**record, "code": code}


def list_invites(rt: Runtime) -> list[dict[str, Any]]:
    """Every invite, oldest first, with its state: `unused`, `used`, `expired` or `revoked`."""
    rows = rt.db.query("SELECT * FROM invites ORDER BY created_at, id")
    now = now_iso()
    return [{**dict(row), "state": _state(dict(row), now)} for row in rows]


def _state(invite: dict[str, Any], now: str) -> str:
    if invite["used_at"] is not None:
        return "used"
    if invite["revoked_at"] is not None:
        return "revoked"
    if invite["expires_at"] is not None and invite["expires_at"] <= now:
        return "expired"
    return "unused"


def revoke_invite(rt: Runtime, invite_id: str) -> None:
    """Make an unused invite unusable; NotFound if it is unknown, used or already revoked."""
    if not is_id(invite_id, "inv"):
        raise NotFound(f"No invite {invite_id!r}.")
    with rt.db.atomic() as tx:
        done = tx.execute(
            "UPDATE invites SET revoked_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
            (now_iso(), invite_id),
        ).rowcount
    if not done:
        raise NotFound(f"No unused invite {invite_id!r}.")


def required_code(code: Any) -> str:
    """The invite code of a registration body; 403 `invite_required` when there is none."""
    if not isinstance(code, str) or not code.strip():
        raise Forbidden(
            "Sign-up on this server needs an invite: send the code you were given as `invite`.",
            code="invite_required",
        )
    return code.strip()


def check(rt: Runtime, code: str) -> None:
    """403 `invite_invalid` unless the code is usable now (read before the costly part of sign-up)."""
    _usable(rt, rt.db.query_one, code)


def redeem(rt: Runtime, tx: Transaction, code: str) -> tuple[str, str]:
    """Use up an invite inside the sign-up transaction `tx`; returns (invite id, plan for the new user).

    403 `invite_invalid` for a code that is unknown, used, revoked or expired (one answer,
    whichever it is), or whose plan the catalog no longer has. The caller calls `mark_used`
    once the user row exists, in the same transaction.
    """
    return _usable(rt, lambda sql, params: tx.execute(sql, params).fetchone(), code)


def _usable(rt: Runtime, query_one: Callable[[str, Any], Any], code: str) -> tuple[str, str]:
    row = None
    if len(code) <= MAX_CODE:
        row = query_one(
            "SELECT id, plan FROM invites WHERE code_hash = ? AND used_at IS NULL AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (_hash_code(code), now_iso()),
        )
    if row is None:
        raise Forbidden("This invite is not valid: it is unknown, used, revoked or expired.", code="invite_invalid")
    plan = row["plan"] if row["plan"] is not None else rt.config.default_plan
    if plan not in rt.config.plans:
        raise Forbidden(
            f"This invite is for plan {plan!r}, which this server no longer offers; ask for a new invite.",
            code="invite_invalid",
        )
    return row["id"], plan


def mark_used(tx: Transaction, invite_id: str, user_id: str) -> None:
    """Record in `tx` that the invite made this user (after the user row exists)."""
    tx.execute("UPDATE invites SET used_at = ?, used_by = ? WHERE id = ?", (now_iso(), user_id, invite_id))

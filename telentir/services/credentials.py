"""API keys and session JWTs, turning a bearer credential into a user, and revoking credentials.

A revocation commits together with a `credential_revoked` record in the event log
(`events.append_revocation`): event streams opened with the credential read it in id order
and end there, in every process (docs/protocol.md §6).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from ..errors import BadRequest, Forbidden, NotFound, Unauthorized
from ..ids import is_id, new_id, now_iso
from ..runtime import Runtime
from ..storage.db import Transaction
from ..storage.rows import UserRow, as_row
from . import audit, events, quotas

API_KEY_PREFIX = "tlk_"
MAX_KEY_NAME = 100
# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION_SECONDS = 60
SESSION_PREFIX = "jti_"  # a session token's credential id is its `jti` behind this prefix
LIMITED_TTL_SECONDS = 300  # how long a sign-in token waits for its second factor


@dataclass(frozen=True)
class Credential:
    """The credential a request authenticated with, as much as a stream needs to watch it."""

    id: str  # an API key's id (`ak_…`), or SESSION_PREFIX + a session token's `jti`
    expires_at: float | None = None  # a session token's `exp` (Unix time); API keys do not expire
    user_id: str | None = None  # a session token's user, whose session epoch it must still match
    epoch: int = 0  # the user's session epoch the token was issued under

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until the credential expires (negative once it has), None if it never does."""
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user row and the credential used."""

    user: UserRow
    credential: Credential
    # A sign-in token waiting for its second factor: it answers GET /api/auth and
    # POST /api/auth/2fa/verify only.
    limited: bool = False

    @property
    def is_session(self) -> bool:
        """Whether the credential is a session token (not an API key)."""
        return self.credential.id.startswith(SESSION_PREFIX)


def _hash_key(key: str) -> str:
    # API keys carry 256 random bits, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(rt: Runtime, user_id: str, name: Any = None) -> dict[str, Any]:
    """Mint an API key; the returned record is the only place the key ever appears."""
    if name is None:
        name = "API key"
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_KEY_NAME:
        raise BadRequest(f"name must be a string of 1 to {MAX_KEY_NAME} characters.")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    record = {"id": new_id("ak"), "name": name.strip(), "created_at": now_iso()}
    with rt.db.atomic() as tx:
        quotas.check_api_keys(rt, tx, user_id)
        tx.execute(
            "INSERT INTO api_keys (id, user_id, name, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (record["id"], user_id, record["name"], _hash_key(key), record["created_at"]),
        )
        audit.record(tx, user_id, "api_key_created", {"apiKeyId": record["id"], "name": record["name"]})
    return {**record, "key": key, "last_used_at": None}


def list_api_keys(rt: Runtime, user_id: str) -> list[dict[str, Any]]:
    """The user's live API keys, without the keys themselves."""
    rows = rt.db.query(
        "SELECT id, name, last_used_at, created_at FROM api_keys "
        "WHERE user_id = ? AND revoked_at IS NULL ORDER BY created_at, id",
        (user_id,),
    )
    return [dict(r) for r in rows]


def revoke_api_key(rt: Runtime, key_id: str, user_id: str | None = None) -> None:
    """Revoke at once; NotFound if absent, already revoked, or (with user_id) not that user's."""
    if not is_id(key_id, "ak"):
        raise NotFound("No such API key.")
    with rt.db.atomic() as tx:
        row = tx.execute("SELECT user_id, name FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,)).fetchone()
        if row is None or (user_id is not None and row["user_id"] != user_id):
            raise NotFound("No such API key.")
        tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now_iso(), key_id))
        events.append_revocation(rt, tx, row["user_id"], key_id)
        audit.record(tx, row["user_id"], "api_key_revoked", {"apiKeyId": key_id, "name": row["name"]})


def revoke_every_credential(rt: Runtime, tx: Transaction, user_id: str) -> None:
    """Revoke every session and API key of the user in `tx` (their streams end at the revocation)."""
    revoke_all_sessions(rt, tx, user_id)
    keys = tx.execute("SELECT id FROM api_keys WHERE user_id = ? AND revoked_at IS NULL", (user_id,)).fetchall()
    tx.execute("UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (now_iso(), user_id))
    for key in keys:
        events.append_revocation(rt, tx, user_id, key["id"])


def check_usable(user: UserRow) -> None:
    """Refuse a deleted account (401, as if absent) and a disabled one (403 `account_disabled`)."""
    if user["deleted_at"] is not None:
        raise Unauthorized("The credential is not valid.")
    if user["disabled_at"] is not None:
        raise Forbidden("This account is disabled; ask the server's operator.", code="account_disabled")


# --- session tokens -------------------------------------------------------------------


def issue_token(rt: Runtime, user_id: str, remember: bool = False, limited: bool = False) -> str:
    """An RS256 JWT signed with the platform key, verifiable with `GET /api/server`'s JWK.

    It carries the user's session epoch (`sep`): bumping the epoch revokes it. A `limited`
    token (`2fa: "pending"`) lives LIMITED_TTL_SECONDS and only reaches the second factor.
    """
    now = int(time.time())
    ttl = rt.config.jwt_remember_ttl_seconds if remember else rt.config.jwt_ttl_seconds
    epoch = rt.db.query_value("SELECT session_epoch FROM users WHERE id = ?", (user_id,))
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "exp": now + (LIMITED_TTL_SECONDS if limited else ttl),
        "jti": secrets.token_urlsafe(16),
        "iss": rt.platform.name,
        "sep": int(epoch or 0),
    }
    if limited:
        claims["2fa"] = "pending"
    return jwt.encode(claims, rt.platform.private_key, algorithm="RS256", headers={"kid": rt.platform.name})


def revoke_all_sessions(rt: Runtime, tx: Transaction, user_id: str) -> None:
    """Revoke every session token of the user (in `tx`): their epoch is left behind. API keys stay.

    Open streams of those sessions see it at their next heartbeat (`why_ended`).
    """
    tx.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ?", (user_id,))


def _decode_token(rt: Runtime, token: str) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            rt.platform.public_key,
            algorithms=["RS256"],
            issuer=rt.platform.name,
            options={"require": ["exp", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The session has expired; log in again.", code="token_expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("The credential is not valid.") from exc


def revoke_token(rt: Runtime, token: str, audit_as: str | None = None) -> None:
    """Log a session token out for the rest of its life (no-op for an invalid token); audited as `audit_as`."""
    try:
        claims = _decode_token(rt, token)
    except Unauthorized:
        return
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (time.time(),))
        added = tx.execute(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (claims["jti"], claims["exp"]),
        ).rowcount
        if added:
            events.append_revocation(rt, tx, claims["sub"], SESSION_PREFIX + claims["jti"])
        if added and audit_as is not None:
            audit.act_as(credential="session")  # the session being logged out is the credential used
            audit.record(tx, claims["sub"], audit_as)


def authenticate(rt: Runtime, credential: str) -> UserRow:
    """The user a bearer credential (JWT or API key) stands for; Unauthorized otherwise."""
    return authenticate_principal(rt, credential).user


def authenticate_principal(rt: Runtime, credential: str) -> Principal:
    """The user a bearer credential stands for, and which credential it is; Unauthorized otherwise.

    One statement per credential, user row included: under load each statement costs the
    request a hand-off of the GIL (bench/RESULTS.md), and every request authenticates.
    """
    if credential.startswith(API_KEY_PREFIX):
        return _user_of_api_key(rt, credential)
    return _user_of_token(rt, credential)


def why_ended(rt: Runtime, credential: Credential) -> str | None:
    """Why `credential` no longer authenticates (`token_expired`, `credential_revoked`), or None while it does."""
    left = credential.seconds_left()
    if left is not None and left <= 0:
        return "token_expired"
    if credential.id.startswith(SESSION_PREFIX):
        jti = credential.id.removeprefix(SESSION_PREFIX)
        row = rt.db.query_row(
            "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?) AS revoked, "
            "(SELECT session_epoch FROM users WHERE id = ? AND disabled_at IS NULL AND deleted_at IS NULL) AS epoch",
            (jti, credential.user_id),
        )
        revoked = row["revoked"] or (credential.user_id is not None and row["epoch"] != credential.epoch)
    else:
        # A disabled or deleted account's keys end their streams like revoked ones.
        revoked = rt.db.query_value(
            "SELECT NOT EXISTS (SELECT 1 FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ? "
            "AND k.revoked_at IS NULL AND u.disabled_at IS NULL AND u.deleted_at IS NULL)",
            (credential.id,),
        )
    return "credential_revoked" if revoked else None


def _user_of_token(rt: Runtime, token: str) -> Principal:
    claims = _decode_token(rt, token)
    row = rt.db.query_row(
        "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?) AS token_revoked, u.* "
        "FROM (SELECT 1) AS one LEFT JOIN users u ON u.id = ?",
        (claims["jti"], claims["sub"]),
    )
    if row["token_revoked"]:
        raise Unauthorized("The session has been logged out; log in again.")
    if row["id"] is None or row["deleted_at"] is not None:
        raise Unauthorized("The credential is not valid.")
    epoch = int(claims.get("sep", 0))
    if row["session_epoch"] != epoch:  # the password changed (or was reset) since
        raise Unauthorized("The session has been revoked; log in again.")
    credential = Credential(SESSION_PREFIX + claims["jti"], float(claims["exp"]), row["id"], epoch)
    user = _user_in(row, "token_revoked")
    check_usable(user)
    return Principal(user, credential, limited=claims.get("2fa") == "pending")


def _user_of_api_key(rt: Runtime, key: str) -> Principal:
    row = rt.db.query_one(
        "SELECT k.id AS api_key_id, k.last_used_at AS api_key_used_at, "
        "k.revoked_at AS api_key_revoked_at, u.* FROM api_keys k JOIN users u ON u.id = k.user_id "
        "WHERE k.key_hash = ?",
        (_hash_key(key),),
    )
    if row is None or row["api_key_revoked_at"] is not None:
        raise Unauthorized("The credential is not valid.")
    user = _user_in(row, "api_key_id", "api_key_used_at", "api_key_revoked_at")
    check_usable(user)
    _touch_api_key(rt, row["api_key_id"], row["api_key_used_at"])
    return Principal(user, Credential(row["api_key_id"]))


def _user_in(row: Any, *others: str) -> UserRow:
    """The user of a row that also holds the columns `others`."""
    record = dict(row)
    for name in others:
        del record[name]
    return as_row(UserRow, record)


def _touch_api_key(rt: Runtime, key_id: str, last_used_at: str | None) -> None:
    now = now_iso()
    if last_used_at is not None and _seconds_between(last_used_at, now) < LAST_USED_RESOLUTION_SECONDS:
        return
    with rt.db.atomic() as tx:
        tx.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))


def _seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()

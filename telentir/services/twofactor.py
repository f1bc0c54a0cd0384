"""Two-factor sign-in with TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) and recovery codes.

The secret is sealed at rest under the master key (context `totp:<user id>`, re-sealed by
`telentir master-key rotate`). A code of the step before, the current or the next step is
accepted, and each step's code once: the last accepted step is stored, and a code of a step
at or before it is refused (a code seen over a shoulder cannot be replayed). Recovery codes
are stored as SHA-256 hashes (80 random bits each: no dictionary to attack) and used once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from typing import Any
from urllib.parse import quote

from ..errors import BadRequest, Conflict
from ..ids import now_iso
from ..runtime import Runtime
from ..storage.rows import UserRow
from . import audit

STEP_SECONDS = 30
DIGITS = 6
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommended length
RECOVERY_CODES = 10
ISSUER = "Telentir"
_WINDOW = (-1, 0, 1)  # the steps around now whose codes are accepted (clock drift)
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off paper


def totp_context(user_id: str) -> str:
    """What a user's TOTP secret is sealed to (so sealed secrets cannot be swapped between users)."""
    return f"totp:{user_id}"


def totp_code(secret: bytes, step: int) -> str:
    """The RFC 6238 code of a time step (HOTP of the step counter, dynamically truncated)."""
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**DIGITS:0{DIGITS}d}"


def current_step(now: float | None = None) -> int:
    """The time step of `now` (default: the clock)."""
    return int((time.time() if now is None else now) // STEP_SECONDS)


def _b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def setup(rt: Runtime, user: UserRow) -> dict[str, str]:
    """A fresh pending secret (replacing any pending one) and its otpauth URL; Conflict when 2FA is on."""
    secret = secrets.token_bytes(SECRET_BYTES)
    sealed = rt.seal(secret, totp_context(user["id"]))
    with rt.db.atomic() as tx:
        changed = tx.execute(
            "UPDATE users SET totp_secret_sealed = ?, totp_last_step = NULL WHERE id = ? AND totp_enabled = 0",
            (sealed, user["id"]),
        ).rowcount
    if not changed:
        raise Conflict("Two-factor sign-in is already on; disable it first.", code="2fa_already_enabled")
    encoded = _b32(secret)
    return {"secret": encoded, "otpauthUrl": otpauth_url(user["email"], encoded)}


def otpauth_url(email: str, encoded_secret: str) -> str:
    """The otpauth URL an authenticator app reads (from a QR code): issuer, account and base32 secret."""
    label = quote(f"{ISSUER}:{email}", safe=":@")
    return f"otpauth://totp/{label}?secret={encoded_secret}&issuer={ISSUER}"


def pending_otpauth_url(rt: Runtime, user: UserRow) -> str:
    """The otpauth URL of the pending secret (set up, not yet enabled); Conflict `2fa_not_set_up` when none is.

    An enabled secret is never shown again: only a pending one, while the person scans it.
    """
    row = _totp_row(rt, user["id"])
    if row["totp_enabled"] or row["totp_secret_sealed"] is None:
        raise Conflict(
            "No two-factor secret is pending: set one up first (POST /api/auth/2fa/setup).", code="2fa_not_set_up"
        )
    secret = rt.unseal(bytes(row["totp_secret_sealed"]), totp_context(user["id"]))
    return otpauth_url(user["email"], _b32(secret))


def enable(rt: Runtime, user: UserRow, code: Any) -> list[str]:
    """Turn 2FA on with a code of the pending secret; returns the ten recovery codes (shown this once)."""
    row = _totp_row(rt, user["id"])
    if row["totp_enabled"]:
        raise Conflict("Two-factor sign-in is already on.", code="2fa_already_enabled")
    if row["totp_secret_sealed"] is None:
        raise Conflict("Set up two-factor sign-in first (POST /api/auth/2fa/setup).", code="2fa_not_set_up")
    if not _use_totp(rt, user["id"], row, _code_text(code)):
        raise invalid_code()
    codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
    with rt.db.atomic() as tx:
        tx.execute("UPDATE users SET totp_enabled = 1 WHERE id = ?", (user["id"],))
        tx.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user["id"],))
        for recovery in codes:
            tx.execute(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                (user["id"], _recovery_hash(recovery)),
            )
        audit.record(tx, user["id"], "2fa_enabled")
    return codes


def check_code(rt: Runtime, user_id: str, code: Any) -> bool:
    """Whether `code` is a TOTP code of an unused step or an unused recovery code; uses it up if so."""
    text = _code_text(code)
    row = _totp_row(rt, user_id)
    if not row["totp_enabled"] or row["totp_secret_sealed"] is None:
        return False
    if text.isdigit() and len(text) == DIGITS:
        return _use_totp(rt, user_id, row, text)
    return _use_recovery(rt, user_id, text)


def disable(rt: Runtime, user_id: str) -> None:
    """Turn 2FA off: the secret, the last step and the recovery codes go."""
    with rt.db.atomic() as tx:
        tx.execute(
            "UPDATE users SET totp_enabled = 0, totp_secret_sealed = NULL, totp_last_step = NULL WHERE id = ?",
            (user_id,),
        )
        tx.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
        audit.record(tx, user_id, "2fa_disabled")


def require_enabled(user: UserRow) -> None:
    """Conflict `2fa_not_enabled` unless the user has 2FA on."""
    if not user["totp_enabled"]:
        raise Conflict("Two-factor sign-in is not on.", code="2fa_not_enabled")


def invalid_code() -> BadRequest:
    """The one 400 for a wrong, reused or malformed code."""
    return BadRequest("The code is not valid.", code="invalid_code")


def _code_text(code: Any) -> str:
    if not isinstance(code, str) or not 0 < len(code.strip()) <= 64:
        raise BadRequest("code must be a string: a 6-digit code of the authenticator app or a recovery code.")
    return code.strip()


def _totp_row(rt: Runtime, user_id: str) -> dict[str, Any]:
    row = rt.db.query_row("SELECT totp_secret_sealed, totp_enabled, totp_last_step FROM users WHERE id = ?", (user_id,))
    return dict(row)


def _use_totp(rt: Runtime, user_id: str, row: dict[str, Any], code: str) -> bool:
    """Match `code` against the steps around now; record the matching step, refusing steps at or before the last."""
    if row["totp_secret_sealed"] is None:
        return False
    secret = rt.unseal(bytes(row["totp_secret_sealed"]), totp_context(user_id))
    now = current_step()
    matched = [now + d for d in _WINDOW if hmac.compare_digest(totp_code(secret, now + d), code)]
    if not matched:
        return False
    step = matched[0]
    with rt.db.atomic() as tx:
        # Conditional, so two requests racing with one code cannot both win.
        used = tx.execute(
            "UPDATE users SET totp_last_step = ? WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
            (step, user_id, step),
        ).rowcount
    return bool(used)


def _use_recovery(rt: Runtime, user_id: str, code: str) -> bool:
    with rt.db.atomic() as tx:
        used = tx.execute(
            "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
            (now_iso(), user_id, _recovery_hash(code)),
        ).rowcount
    return bool(used)


def _recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))  # 80 bits
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _recovery_hash(code: str) -> str:
    # Dashes, spaces and case are forgiven: the code is typed from paper.
    normalized = code.replace("-", "").replace(" ", "").upper()
    return hashlib.sha256(normalized.encode()).hexdigest()

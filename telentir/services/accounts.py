"""Users, sign-up (under TELENTIR_SIGNUP), passwords, logins and phone verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import BadRequest, Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from ..ids import new_id, now_iso
from ..runtime import Runtime
from ..storage.db import IntegrityError, Transaction
from ..storage.rows import UserRow, as_row, as_row_or_none
from . import attempts, audit, credentials, invites, ratelimit, texts, twofactor

_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")
_PHONE_RE = re.compile(r"\+?[0-9]{7,15}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_NAME = 100
MAX_EMAIL = 320
CODE_ATTEMPTS = 5


# --- passwords ------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """scrypt (memory-hard) with a random salt, as `scrypt$n$r$p$salt$hash`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    parts = [
        str(_SCRYPT["n"]),
        str(_SCRYPT["r"]),
        str(_SCRYPT["p"]),
        base64.b64encode(salt).decode(),
        base64.b64encode(digest).decode(),
    ]
    return "scrypt$" + "$".join(parts)


def check_password(stored: str | None, password: str) -> bool:
    """Constant-time check; with no stored hash, burn the same time and answer False."""
    if not stored:
        hash_password(password)  # so an unknown account takes as long as a wrong password
        return False
    _, n, r, p, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(candidate, base64.b64decode(digest))


# --- users ----------------------------------------------------------------------------


def normalize_email(email: Any) -> str:
    """A trimmed, valid email address, or BadRequest."""
    if not isinstance(email, str) or not _EMAIL_RE.fullmatch(email.strip()):
        raise BadRequest("email must be a valid email address.")
    return email.strip()


def normalize_phone(phone: Any) -> str:
    """A phone number of 7-15 digits (spaces, dashes and brackets removed), or BadRequest."""
    digits = re.sub(r"[\s().-]", "", phone) if isinstance(phone, str) else ""
    if not _PHONE_RE.fullmatch(digits):
        raise BadRequest("phone must be a phone number of 7 to 15 digits, optionally starting with +.")
    return digits


def _name(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise BadRequest(f"{field} must be a string of at most {MAX_NAME} characters.")
    return value.strip()


def _check_password_rules(password: Any, field: str = "password") -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"{field} must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long.")
    return password


def create_user(
    rt: Runtime,
    email: Any,
    phone: Any,
    *,
    first_name: Any = "",
    last_name: Any = "",
    password: Any = None,
    verified: bool = False,
    plan: str | None = None,
) -> UserRow:
    """Create a user (password optional, plan None: TELENTIR_DEFAULT_PLAN); Conflict if the email is taken."""
    if plan is not None and plan not in rt.config.plans:
        raise BadRequest(f"Unknown plan {plan!r}; the catalog has {', '.join(rt.config.plans)}.")
    row = _user_row(rt, email, phone, first_name, last_name, verified)
    row["plan"] = plan or row["plan"]
    if password is not None:
        row["password_hash"] = hash_password(_check_password_rules(password))
    with _email_unique():
        with rt.db.atomic() as tx:
            _insert_user(tx, row)
    return get_user(rt, str(row["id"]))


def _user_row(rt: Runtime, email: Any, phone: Any, first_name: Any, last_name: Any, verified: bool) -> dict[str, Any]:
    """A validated users row, not yet written, without its password hash (hashed last); BadRequest for bad input."""
    return {
        "id": new_id("usr"),
        "email": normalize_email(email),
        "phone": normalize_phone(phone),
        "first_name": _name(first_name, "firstName"),
        "last_name": _name(last_name, "lastName"),
        "password_hash": None,
        "phone_verified": int(bool(verified)),
        "plan": rt.config.default_plan,
        "created_at": now_iso(),
    }


def _insert_user(tx: Transaction, row: dict[str, Any]) -> None:
    tx.execute(
        "INSERT INTO users (id, email, phone, first_name, last_name, password_hash, phone_verified, "
        "plan, created_at) VALUES (:id, :email, :phone, :first_name, :last_name, :password_hash, "
        ":phone_verified, :plan, :created_at)",
        row,
    )


@contextmanager
def _email_unique() -> Iterator[None]:
    """Turn the users table's unique-email violation into 409 `email_taken`."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict("An account with this email already exists.", code="email_taken") from exc


def get_user(rt: Runtime, user_id: str) -> UserRow:
    """The user row as a dict; NotFound if absent."""
    row = as_row_or_none(UserRow, rt.db.query_one("SELECT * FROM users WHERE id = ?", (user_id,)))
    if row is None:
        raise NotFound("No such user.")
    return row


def find_user_by_email(rt: Runtime, email: str) -> UserRow:
    """The user with this email (case-insensitive); NotFound if absent."""
    row = as_row_or_none(
        UserRow, rt.db.query_one("SELECT * FROM users WHERE email = ? AND deleted_at IS NULL", (email.strip(),))
    )
    if row is None:
        raise NotFound(f"No user with email {email!r}.")
    return row


def list_users(rt: Runtime) -> list[UserRow]:
    """Every user, oldest first."""
    rows = rt.db.query("SELECT * FROM users WHERE deleted_at IS NULL ORDER BY created_at, id")
    return [as_row(UserRow, r) for r in rows]


def set_phone_verified(rt: Runtime, user_id: str) -> None:
    """Mark the user's phone verified and drop any pending code."""
    with rt.db.atomic() as tx:
        tx.execute("UPDATE users SET phone_verified = 1 WHERE id = ?", (user_id,))
        tx.execute("DELETE FROM phone_codes WHERE user_id = ?", (user_id,))


def public_profile(user: UserRow) -> dict[str, Any]:
    """The `auth` object of `GET /api/auth`."""
    return {
        "id": user["id"],
        "email": user["email"],
        "firstName": user["first_name"],
        "lastName": user["last_name"],
        "phoneVerified": bool(user["phone_verified"]),
        "twoFactorEnabled": bool(user["totp_enabled"]),
    }


def check_signup_open(rt: Runtime) -> None:
    """403 `signup_closed` when TELENTIR_SIGNUP=closed (checked before the body is even read)."""
    if rt.config.signup == "closed":
        raise Forbidden(
            "Sign-up is closed on this server: its operator creates accounts (`telentir users create`).",
            code="signup_closed",
        )


def register(rt: Runtime, body: dict[str, Any], client_addr: str) -> UserRow:
    """Self-service sign-up under TELENTIR_SIGNUP: with `invite`, the body's code is used up with the new account.

    Every sign-up with valid fields counts against its client address
    (TELENTIR_SIGNUPS_PER_ADDRESS_PER_HOUR) before the password is hashed, whether or not
    it then succeeds: the scrypt run is what an attacker would make us pay for.
    """
    check_signup_open(rt)
    code = invites.required_code(body.get("invite")) if rt.config.signup == "invite" else None
    if code is not None:
        invites.check(rt, code)  # before hashing the password: a bad code costs the server nothing
    password = _check_password_rules(body.get("password"))
    if body.get("confirmPassword") != password:
        raise BadRequest("confirmPassword must equal password.")
    row = _user_row(rt, body.get("email"), body.get("phone"), body.get("firstName"), body.get("lastName"), False)
    _count_signup(rt, client_addr)
    row["password_hash"] = hash_password(password)
    with _email_unique():
        with rt.db.atomic() as tx:
            invite_id = None
            if code is not None:
                invite_id, row["plan"] = invites.redeem(rt, tx, code)
            _insert_user(tx, row)
            if invite_id is not None:
                invites.mark_used(tx, invite_id, row["id"])
    return get_user(rt, str(row["id"]))


def _count_signup(rt: Runtime, client_addr: str) -> None:
    """Count a sign-up against its address; RateLimited (nothing counted or created) past the hourly limit."""
    network = ratelimit.network_of(client_addr)
    most = rt.config.signups_per_address_per_hour
    ratelimit.charge(
        rt, [ratelimit.Limit(f"signup:addr:{network}", most, ratelimit.HOUR, "signups_per_address_per_hour")]
    )


# --- login ----------------------------------------------------------------------------


def login(rt: Runtime, email: Any, password: Any, client_addr: str) -> UserRow:
    """Check email + password under rate limits; the same 401 whichever part was wrong."""
    if (
        not isinstance(email, str)
        or not isinstance(password, str)
        or len(password) > MAX_PASSWORD
        or len(email) > MAX_EMAIL
    ):
        raise BadRequest("email and password must be strings (an email of at most 320 characters).")
    # Counted (as a failure) up front: parallel guesses cannot slip through. An unknown email counts like a known one.
    attempt = attempts.begin(rt, attempts.Secret.SIGN_IN, attempts.sign_in_account(email), client_addr)
    row = as_row_or_none(
        UserRow, rt.db.query_one("SELECT * FROM users WHERE email = ? AND deleted_at IS NULL", (email.strip(),))
    )
    audit.act_as(credential="password")
    # Checked even without an account (against nothing), so a wrong email costs as long as a wrong password.
    if not check_password(row["password_hash"] if row is not None else None, password) or row is None:
        if row is not None:
            audit.record_alone(rt, row["id"], "login_failed")
        raise Unauthorized("The email or password is incorrect.", code="invalid_credentials", extra={"status": "error"})
    credentials.check_usable(row)  # a disabled account: 403 account_disabled, once the password was right
    if row["totp_enabled"]:
        # Half the way in: this attempt was no failure, but the earlier ones (wrong codes
        # included) are forgiven only once the second factor is right (verify_second_factor).
        ratelimit.refund(rt, attempt.charge)
    else:
        attempts.succeeded(rt, attempt)
        audit.record_alone(rt, row["id"], "login")
    return row


def verify_second_factor(rt: Runtime, user: UserRow, code: Any, client_addr: str) -> None:
    """Check a TOTP or recovery code of a signing-in user; wrong codes count with wrong passwords."""
    attempt = attempts.begin(rt, attempts.Secret.SIGN_IN, attempts.sign_in_account(user["email"]), client_addr)
    if not twofactor.check_code(rt, user["id"], code):
        audit.record_alone(rt, user["id"], "2fa_failed")
        raise twofactor.invalid_code()
    attempts.succeeded(rt, attempt)


def sign_in_with_second_factor(rt: Runtime, user: UserRow, code: Any, client_addr: str) -> None:
    """The second step of a sign-in: the code checked, the sign-in recorded."""
    verify_second_factor(rt, user, code, client_addr)
    audit.record_alone(rt, user["id"], "login", {"secondFactor": True})


def enable_second_factor(rt: Runtime, user: UserRow, code: Any, client_addr: str) -> list[str]:
    """Turn 2FA on with a code of the pending secret (wrong codes counted like sign-in attempts); the recovery codes."""
    attempt = attempts.begin(rt, attempts.Secret.SIGN_IN, attempts.sign_in_account(user["email"]), client_addr)
    try:
        codes = twofactor.enable(rt, user, code)
    except Conflict:  # nothing was guessed: the state was wrong
        ratelimit.refund(rt, attempt.charge)
        raise
    except BadRequest:
        audit.record_alone(rt, user["id"], "2fa_failed")
        raise
    attempts.succeeded(rt, attempt)
    return codes


def disable_second_factor(rt: Runtime, user: UserRow, code: Any, client_addr: str) -> None:
    """Turn 2FA off with a current code (TOTP or recovery), counted like sign-in attempts."""
    twofactor.require_enabled(user)
    verify_second_factor(rt, user, code, client_addr)
    twofactor.disable(rt, user["id"])


# --- password change and reset ----------------------------------------------------------


def change_password(rt: Runtime, user: UserRow, current: Any, new: Any, client_addr: str) -> None:
    """Check the current password (counted like sign-in), set the new one and revoke every session."""
    if not isinstance(current, str) or len(current) > MAX_PASSWORD:
        raise BadRequest("currentPassword must be a string.")
    new_password = _check_password_rules(new, "newPassword")
    attempt = attempts.begin(rt, attempts.Secret.SIGN_IN, attempts.sign_in_account(user["email"]), client_addr)
    if not check_password(user["password_hash"], current):
        raise BadRequest("The current password is incorrect.", code="invalid_password")
    attempts.succeeded(rt, attempt)
    set_password(rt, user["id"], new_password)


def set_password(rt: Runtime, user_id: str, password: Any, action: str = "password_changed") -> None:
    """Set a user's password and revoke every session of theirs (API keys stay); audited as `action`."""
    digest = hash_password(_check_password_rules(password))
    with rt.db.atomic() as tx:
        tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (digest, user_id))
        tx.execute("DELETE FROM password_reset_codes WHERE user_id = ?", (user_id,))
        credentials.revoke_all_sessions(rt, tx, user_id)
        audit.record(tx, user_id, action)


def request_password_reset(rt: Runtime, email: Any, client_addr: str) -> None:
    """Text a one-time reset code to the account's verified phone; silently nothing otherwise.

    The caller answers 202 whatever happens, so the answer tells nobody whether the email has
    an account (nor whether its phone's hourly text limit is reached). Every valid request
    counts against its client address (TELENTIR_PASSWORD_RESETS_PER_ADDRESS_PER_HOUR): past
    it, 429 whether or not the account exists.
    """
    if not isinstance(email, str) or len(email) > MAX_EMAIL:
        raise BadRequest("email must be a string of at most 320 characters.")
    network = ratelimit.network_of(client_addr)
    most = rt.config.password_resets_per_address_per_hour
    ratelimit.charge(
        rt, [ratelimit.Limit(f"reset:addr:{network}", most, ratelimit.HOUR, "password_resets_per_address_per_hour")]
    )
    row = rt.db.query_one("SELECT * FROM users WHERE email = ? AND deleted_at IS NULL", (email.strip(),))
    if row is None or not row["phone_verified"]:
        return
    user_id = row["id"]
    code = f"{secrets.randbelow(10**6):06d}"

    def store_code() -> None:  # only once the text is allowed
        with rt.db.atomic() as tx:
            tx.execute(
                "INSERT INTO password_reset_codes (user_id, code_hash, expires_at, attempts) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (user_id) DO UPDATE SET code_hash = excluded.code_hash, "
                "expires_at = excluded.expires_at, attempts = 0",
                (user_id, _code_hash(rt, user_id, "reset:" + code), time.time() + rt.config.phone_code_ttl_seconds),
            )

    try:
        texts.send(rt, row["phone"], f"Your Telentir password reset code is {code}", prepare=store_code)
    except RateLimited:
        return  # the phone had its texts this hour: nothing sent, and the answer does not say so


def confirm_password_reset(rt: Runtime, email: Any, code: Any, new: Any, client_addr: str) -> None:
    """Check the texted code (counted like sign-in attempts), set the new password, revoke every session."""
    if not isinstance(email, str) or len(email) > MAX_EMAIL:
        raise BadRequest("email must be a string of at most 320 characters.")
    if not isinstance(code, str) or not 0 < len(code.strip()) <= 64:
        raise BadRequest("code must be the string sent by SMS.")
    new_password = _check_password_rules(new, "newPassword")
    attempt = attempts.begin(rt, attempts.Secret.SIGN_IN, attempts.sign_in_account(email), client_addr)
    audit.act_as(credential="reset_code")
    user = rt.db.query_one("SELECT id FROM users WHERE email = ? AND deleted_at IS NULL", (email.strip(),))
    row = None
    if user is not None:
        with rt.db.atomic() as tx:
            # One of the code's tries is used before comparing, so parallel guesses share the budget.
            tx.execute("UPDATE password_reset_codes SET attempts = attempts + 1 WHERE user_id = ?", (user["id"],))
            row = tx.execute("SELECT * FROM password_reset_codes WHERE user_id = ?", (user["id"],)).fetchone()
    ok = (
        user is not None
        and row is not None
        and row["expires_at"] > time.time()
        and row["attempts"] <= CODE_ATTEMPTS
        and hmac.compare_digest(row["code_hash"], _code_hash(rt, user["id"], "reset:" + code.strip()))
    )
    if not ok or user is None:
        raise BadRequest("The code is not valid; request a new one if it has expired.", code="invalid_code")
    set_password(rt, user["id"], new_password, "password_reset")  # deletes the code: it works once
    attempts.succeeded(rt, attempt)


# --- phone codes ----------------------------------------------------------------------


def _code_hash(rt: Runtime, user_id: str, code: str) -> str:
    # Keyed with the master key: a 6-digit code space is too small for a plain hash.
    return hmac.new(rt.master_key, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


def send_phone_code(rt: Runtime, user: UserRow) -> None:
    """Create a fresh one-time code and send it by SMS (at most TELENTIR_SMS_PER_PHONE_PER_HOUR to one phone)."""
    if user["phone_verified"]:
        raise Conflict("This phone number is already verified.", code="already_verified")
    code = f"{secrets.randbelow(10**6):06d}"

    def store_code() -> None:  # only once the text is allowed: a refused send leaves the old code valid
        with rt.db.atomic() as tx:
            tx.execute(
                "INSERT INTO phone_codes (user_id, code_hash, expires_at, attempts) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (user_id) DO UPDATE SET code_hash = excluded.code_hash, "
                "expires_at = excluded.expires_at, attempts = 0",
                (user["id"], _code_hash(rt, user["id"], code), time.time() + rt.config.phone_code_ttl_seconds),
            )

    texts.send(rt, user["phone"], f"Your Telentir verification code is {code}", prepare=store_code)


def verify_phone_code(rt: Runtime, user: UserRow, code: Any, client_addr: str) -> None:
    """Check a code: right → phone verified; wrong, expired or used up → one 400."""
    if not isinstance(code, str) or not code.strip():
        raise BadRequest("code must be the string sent by SMS.")
    attempt = attempts.begin(rt, attempts.Secret.PHONE_CODE, user["id"], client_addr)
    with rt.db.atomic() as tx:
        # Use up one of the code's tries before comparing, so parallel guesses share the budget.
        tx.execute("UPDATE phone_codes SET attempts = attempts + 1 WHERE user_id = ?", (user["id"],))
        row = tx.execute("SELECT * FROM phone_codes WHERE user_id = ?", (user["id"],)).fetchone()
    ok = (
        row is not None
        and row["expires_at"] > time.time()
        and row["attempts"] <= CODE_ATTEMPTS
        and hmac.compare_digest(row["code_hash"], _code_hash(rt, user["id"], code.strip()))
    )
    if not ok:
        raise BadRequest("The code is not valid; request a new one if it has expired.", code="invalid_code")
    set_phone_verified(rt, user["id"])
    attempts.succeeded(rt, attempt)

"""Deleting an account for good, in an order a crash cannot leave half-visible.

1. One transaction marks the user deleted (`deleted_at`), moves the email aside (so it may
   sign up again at once), revokes every session and API key (streams end) and writes the
   `account_deleted` audit entry. From this commit on no credential works and no read finds
   the user.
2. The objects go batch by batch: their ciphertext files (or S3 objects) are erased first,
   then the rows that named them, so a crash between the two leaves rows of a deleted user,
   never a live row without its file.
3. One transaction removes everything else the user owns and the user row itself.

A deletion cut short by a crash is finished by the next start-up (`finish_pending`, from
`serving.prepare`) and by the maintenance loop (on shared storage, a node that never
restarts). A Stripe customer is left alone: the caller is told its id, to close it in Stripe.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import BadRequest
from ..ids import now_iso
from ..runtime import Runtime
from ..storage.erase import erasing
from ..storage.rows import UserRow
from . import accounts, attempts, audit, credentials, twofactor

log = logging.getLogger(__name__)

OBJECT_BATCH = 500
# The user's rows besides objects (which go first, with their files). The tables with a foreign
# key to users cascade too; these are named so step 3 reads as what it removes, and `events`,
# `stream_slots` and `stripe_events` have no foreign key.
OWNED_TABLES = (
    "publications",
    "stores",
    "keys",
    "servers",
    "jobs",
    "api_keys",
    "recovery_codes",
    "password_reset_codes",
    "phone_codes",
    "key_generations",
    "events",
    "stream_slots",
    "stripe_events",
)


def delete_own_account(rt: Runtime, user: UserRow, password: Any, code: Any, client_addr: str) -> str | None:
    """DELETE /account: the password (counted like sign-in) and, with 2FA on, a code; then delete.

    Returns the account's Stripe customer id (left alone), if any.
    """
    if not isinstance(password, str) or len(password) > accounts.MAX_PASSWORD:
        raise BadRequest("password must be a string.")
    attempt = attempts.begin(rt, attempts.Secret.SIGN_IN, attempts.sign_in_account(user["email"]), client_addr)
    if not accounts.check_password(user["password_hash"], password):
        raise BadRequest("The password is incorrect.", code="invalid_password")
    if user["totp_enabled"] and not _code_is_right(rt, user["id"], code):
        raise twofactor.invalid_code()
    attempts.succeeded(rt, attempt)
    return delete_account(rt, user["id"])


def _code_is_right(rt: Runtime, user_id: str, code: Any) -> bool:
    """Whether `code` is a right TOTP or recovery code (used up if so); missing or malformed is wrong."""
    try:
        return isinstance(code, str) and twofactor.check_code(rt, user_id, code)
    except BadRequest:
        return False


def delete_account(rt: Runtime, user_id: str) -> str | None:
    """Mark the user deleted, then erase everything; returns the Stripe customer id left alone, if any."""
    customer = begin(rt, user_id)
    finish(rt, user_id)
    return customer


def begin(rt: Runtime, user_id: str) -> str | None:
    """Step 1: in one transaction, no credential works and no read finds the user; the Stripe customer id."""
    with rt.db.atomic() as tx:
        row = tx.execute(
            "SELECT email, stripe_customer_id FROM users WHERE id = ? AND deleted_at IS NULL", (user_id,)
        ).fetchone()
        if row is None:
            return None
        # The unique email is moved aside (ids are unique), so the address may sign up again at once.
        tx.execute(
            "UPDATE users SET deleted_at = ?, email = ? WHERE id = ?",
            (now_iso(), f"{user_id}@deleted.invalid", user_id),
        )
        credentials.revoke_every_credential(rt, tx, user_id)
        detail = {"email": row["email"], "stripeCustomerId": row["stripe_customer_id"]}
        audit.record(tx, user_id, audit.ACCOUNT_DELETED, detail)
    return row["stripe_customer_id"]  # type: ignore[no-any-return]


def finish(rt: Runtime, user_id: str) -> int:
    """Steps 2 and 3 for a user marked deleted (idempotent: a crash anywhere is finished by running it again).

    Returns how many objects were erased.
    """
    with erasing(rt.db):  # inline ciphertext and event payloads overwritten, not only unlinked
        return _erase(rt, user_id)


def _erase(rt: Runtime, user_id: str) -> int:
    erased = 0
    # The events first: an inline object's object_created event reads its ciphertext from the
    # object's row (services/events.py), so none is left to a stream without its bytes.
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM events WHERE user_id = ?", (user_id,))
    while rows := rt.db.query(
        "SELECT n, blob FROM objects WHERE user_id = ? ORDER BY n LIMIT ?", (user_id, OBJECT_BATCH)
    ):
        rt.blobs.delete_many([r["blob"] for r in rows if r["blob"] is not None])
        with rt.db.atomic() as tx:
            erased += tx.execute("DELETE FROM objects WHERE user_id = ? AND n <= ?", (user_id, rows[-1]["n"])).rowcount
    with rt.db.atomic() as tx:
        for table in OWNED_TABLES:
            tx.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))  # noqa: S608 (names from the tuple)
        # The audit trail of the account goes with it, but for the record that it was deleted.
        tx.execute("DELETE FROM audit WHERE user_id = ? AND action != ?", (user_id, audit.ACCOUNT_DELETED))
        tx.execute("DELETE FROM users WHERE id = ? AND deleted_at IS NOT NULL", (user_id,))
    return erased


def finish_pending(rt: Runtime) -> int:
    """Finish every deletion a crash cut short; returns how many accounts."""
    pending = [r["id"] for r in rt.db.query("SELECT id FROM users WHERE deleted_at IS NOT NULL")]
    for user_id in pending:
        erased = finish(rt, user_id)
        log.warning("finished the deletion of account %s (%d object(s) erased)", user_id, erased)
    return len(pending)


def set_disabled(rt: Runtime, user_id: str, disabled: bool) -> None:
    """Disable (every credential and sign-in refused, streams end) or enable an account."""
    with rt.db.atomic() as tx:
        tx.execute(
            "UPDATE users SET disabled_at = ? WHERE id = ? AND deleted_at IS NULL",
            (now_iso() if disabled else None, user_id),
        )
        audit.record(tx, user_id, "account_disabled" if disabled else "account_enabled")
